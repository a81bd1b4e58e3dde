using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text;

namespace KaDeploy.Cli;

/// <summary>
/// The one place an option is defined: name, aliases, value name, description, default and what a valid value
/// is. --help, the man pages and the shell completion are all generated from the <see cref="Command"/> tree these
/// options build (see <see cref="ManPages"/> and <see cref="Completion"/>), so they cannot drift apart. Every value is
/// checked while parsing: a bad value is a usage error (one line, exit 2) before anything binds or waits.
/// Each factory also records a value it refuses, so that a test can try every option's refusal
/// (<see cref="BadExample"/>).
/// </summary>
internal static class Opt
{
    private static readonly ConditionalWeakTable<Option, string> BadExamples = new();
    private static readonly ConditionalWeakTable<Option, string> ValueKinds = new();

    /// <summary>A value this option refuses (for the data-driven test over every option); null when none was recorded.</summary>
    public static string? BadExample(Option option) => BadExamples.TryGetValue(option, out var s) ? s : null;

    /// <summary>What completion offers for the value: "file", "directory", "host", or a space-separated word list.</summary>
    public static string? ValueKind(Option option) => ValueKinds.TryGetValue(option, out var s) ? s : null;

    /// <summary>True when the option takes a value (not a flag).</summary>
    public static bool TakesValue(Option option) => option.ValueType != typeof(bool);

    private static T Register<T>(T option, string bad, string? kind = null) where T : Option
    {
        BadExamples.AddOrUpdate(option, bad);
        if (kind is not null) ValueKinds.AddOrUpdate(option, kind);
        return option;
    }

    private static string Name(ArgumentResult r) =>
        r.Parent is OptionResult o ? o.Option.Name : r.Argument.Name;

    private static string Token(ArgumentResult r) => r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";

    /// <summary>A flag.</summary>
    public static Option<bool> Flag(string name, string description, params string[] aliases) =>
        new(name, aliases) { Description = description };

    /// <summary>An integer in [min, max].</summary>
    public static Option<int> Int(string name, string description, int min, int max, int defaultValue, string valueName = "N", params string[] aliases)
    {
        var o = new Option<int>(name, aliases)
        {
            Description = description, HelpName = valueName, DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseInt(r, min, max) ?? defaultValue,
        };
        return Register(o, (max == int.MaxValue ? min - 1L : max + 1L).ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>An optional integer in [min, max].</summary>
    public static Option<int?> OptionalInt(string name, string description, int min, int max, string valueName = "N", params string[] aliases)
    {
        var o = new Option<int?>(name, aliases) { Description = description, HelpName = valueName, CustomParser = r => ParseInt(r, min, max) };
        return Register(o, (min - 1L).ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>A TCP or UDP port; 0 (any free port) only when <paramref name="allowAny"/>.</summary>
    public static Option<int> Port(string name, string description, int defaultValue, bool allowAny, params string[] aliases) =>
        Register(Int(name, description, allowAny ? 0 : 1, 65535, defaultValue, "PORT", aliases), "65536");

    private static int? ParseInt(ArgumentResult r, int min, int max)
    {
        string t = Token(r);
        if (!long.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v))
        {
            r.AddError($"{Name(r)} '{t}': not a whole number");
            return null;
        }
        if (v < min || v > max)
        {
            r.AddError(max == int.MaxValue ? $"{Name(r)} {t}: must be at least {min}" : $"{Name(r)} {t}: must be between {min} and {max}");
            return null;
        }
        return (int)v;
    }

    /// <summary>Seconds, as a number (fractions allowed) in [min, max].</summary>
    public static Option<double> Seconds(string name, string description, double min, double max, double defaultValue, params string[] aliases)
    {
        var o = new Option<double>(name, aliases)
        {
            Description = description, HelpName = "SECONDS", DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseSeconds(r, min, max) ?? defaultValue,
        };
        return Register(o, "-1");
    }

    /// <summary>Optional seconds.</summary>
    public static Option<double?> OptionalSeconds(string name, string description, double min, double max, params string[] aliases)
    {
        var o = new Option<double?>(name, aliases) { Description = description, HelpName = "SECONDS", CustomParser = r => ParseSeconds(r, min, max) };
        return Register(o, "soon");
    }

    private static double? ParseSeconds(ArgumentResult r, double min, double max)
    {
        string t = Token(r);
        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
        {
            r.AddError($"{Name(r)} '{t}': not a number of seconds");
            return null;
        }
        if (v < min || v > max)
        {
            r.AddError($"{Name(r)} {t}: must be between {min.ToString(CultureInfo.InvariantCulture)} and {max.ToString(CultureInfo.InvariantCulture)} seconds");
            return null;
        }
        return v;
    }

    /// <summary>A byte size (64MiB, 1G, 512k) in [min, max].</summary>
    public static Option<long> Size(string name, string description, long min, long max, string defaultValue, params string[] aliases)
    {
        long def = PayloadSelection.ParseSize(defaultValue);
        var o = new Option<long>(name, aliases)
        {
            Description = description, HelpName = "SIZE", DefaultValueFactory = _ => def,
            CustomParser = r =>
            {
                string t = Token(r);
                long v;
                try { v = PayloadSelection.ParseSize(t); }
                catch (Exception e) when (e is KaDeployException or OverflowException)
                {
                    r.AddError($"{Name(r)} '{t}': not a size (examples: 64MiB, 1GiB, 512k)");
                    return def;
                }
                if (v < min || v > max)
                    r.AddError($"{Name(r)} {t}: must be between {Reporting.ProgressLine.Size(min)} and {Reporting.ProgressLine.Size(max)}");
                return v;
            },
        };
        return Register(o, min > 0 ? "0" : "12parsecs");
    }

    /// <summary>An IP address.</summary>
    public static Option<IPAddress?> Address(string name, string description, string? defaultValue = null, params string[] aliases)
    {
        var o = new Option<IPAddress?>(name, aliases)
        {
            Description = description, HelpName = "ADDRESS",
            CustomParser = r =>
            {
                string t = Token(r);
                if (IPAddress.TryParse(t, out var a) && t.Length > 0) return a;
                r.AddError($"{Name(r)} '{t}': not an IP address");
                return null;
            },
        };
        if (defaultValue is not null) o.DefaultValueFactory = _ => IPAddress.Parse(defaultValue);
        return Register(o, "300.1.1.1", "host");
    }

    /// <summary>HOST[:PORT]: a name or address, and a port in 1..65535 when given.</summary>
    public static Option<string?> HostPort(string name, string description, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description, HelpName = "HOST[:PORT]",
            CustomParser = r =>
            {
                string t = Token(r);
                try
                {
                    var (host, port) = Session.Links.ParseHostPort(t, Protocol.ProtocolConstants.DefaultControlPort);
                    if (host.Length == 0 || port is < 1 or > 65535) throw new FormatException();
                    return t;
                }
                catch (Exception e) when (e is FormatException or KaDeployException or ArgumentException or OverflowException)
                {
                    r.AddError($"{Name(r)} '{t}': expected HOST or HOST:PORT (port 1-65535)");
                    return null;
                }
            },
        };
        return Register(o, "127.0.0.1:70000", "host");
    }

    /// <summary>A name that travels in the protocol: 1 to 255 UTF-8 bytes, no control characters.</summary>
    public static Option<string> Name(string name, string description, string? defaultValue, string valueName = "NAME", params string[] aliases)
    {
        var o = new Option<string>(name, aliases)
        {
            Description = description, HelpName = valueName,
            CustomParser = r =>
            {
                string t = Token(r);
                if (t.Length == 0 || Encoding.UTF8.GetByteCount(t) > 255 || t.Any(char.IsControl))
                    r.AddError($"{Name(r)} '{t}': must be 1 to 255 bytes without control characters");
                return t;
            },
        };
        if (defaultValue is not null) o.DefaultValueFactory = _ => defaultValue;
        return Register(o, "");
    }

    /// <summary>
    /// --key-file FILE (issue 9): the pre-shared key of the cluster or session. A file readable by group or
    /// others is refused here, before anything binds; /proc/cmdline takes the key from its ka.key= argument
    /// (a network-booted node). Only the path is kept: the action loads the key, which never reaches a log.
    /// </summary>
    public static Option<string?> KeyFile(string description)
    {
        var o = new Option<string?>("--key-file")
        {
            Description = description, HelpName = "FILE",
            CustomParser = r =>
            {
                string t = Token(r);
                try { using var _ = Security.PresharedKey.LoadFile(t); }
                catch (Exception e) when (e is KaDeployException or ArgumentException) { r.AddError($"{Name(r)} {t}: {e.Message}"); }
                return t;
            },
        };
        return Register(o, "/nonexistent/ka-deploy.key", "file");
    }

    /// <summary>The key of --key-file, or null.</summary>
    public static Security.PresharedKey? LoadKey(string? path) => path is null ? null : Security.PresharedKey.LoadFile(path);

    /// <summary>Once the other options passed: the key's fingerprint, or the one warning an operator must not miss.</summary>
    public static void SayKey(Security.PresharedKey? key, string? path, TextWriter log, string who)
    {
        ArgumentNullException.ThrowIfNull(log);
        log.WriteLine(key is null
            ? $"{who}: warning: no --key-file: the payload travels in clear and anyone on the network can join"
            : $"{who}: key {key.Fingerprint} (from {path}): every connection authenticated, the payload sealed");
    }

    /// <summary>A shell command: not empty.</summary>
    public static Option<string?> Command(string name, string description, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description, HelpName = "COMMAND",
            CustomParser = r =>
            {
                string t = Token(r);
                if (string.IsNullOrWhiteSpace(t)) r.AddError($"{Name(r)}: the command is empty");
                return t;
            },
        };
        return Register(o, " ");
    }

    /// <summary>An existing directory.</summary>
    public static Option<string?> ExistingDirectory(string name, string description, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description, HelpName = "DIR",
            CustomParser = r =>
            {
                string t = Token(r);
                if (!Directory.Exists(t)) r.AddError($"{Name(r)} {t}: no such directory");
                return t;
            },
        };
        return Register(o, "/nonexistent/ka-deploy", "directory");
    }

    /// <summary>An existing file (or device) that this process can read.</summary>
    public static Option<string?> ReadableFile(string name, string description, string valueName = "FILE", params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description, HelpName = valueName,
            CustomParser = r =>
            {
                string t = Token(r);
                if (Directory.Exists(t)) r.AddError($"{Name(r)} {t}: is a directory, not a file");
                else if (!File.Exists(t)) r.AddError($"{Name(r)} {t}: no such file");
                else
                {
                    try { using var _ = new FileStream(t, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1); }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException) { r.AddError($"{Name(r)} {t}: cannot be read ({e.Message})"); }
                }
                return t;
            },
        };
        return Register(o, "/nonexistent/ka-deploy", "file");
    }

    /// <summary>A file this process will create or replace: its directory must exist and be writable now, not after the session.</summary>
    public static Option<string?> OutputFile(string name, string description, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description, HelpName = "FILE",
            CustomParser = r =>
            {
                string t = Token(r);
                if (CheckWritableFile(t) is { } why) r.AddError($"{Name(r)} {t}: {why}");
                return t;
            },
        };
        return Register(o, "/nonexistent/ka-deploy/out", "file");
    }

    /// <summary>Why <paramref name="path"/> cannot be written (its directory missing, read-only, or it is a directory); null when it can.</summary>
    public static string? CheckWritableFile(string path)
    {
        if (path.Length == 0) return "empty path";
        if (Directory.Exists(path)) return "is a directory";
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) ?? "/";
        if (!Directory.Exists(dir)) return $"directory {dir} does not exist";
        return CheckWritableDirectory(dir) is { } why ? $"directory {dir}: {why}" : null;
    }

    /// <summary>Why nothing can be created in <paramref name="dir"/> (read-only file system, permissions); null when it can.</summary>
    public static string? CheckWritableDirectory(string dir)
    {
        // access(2) says yes to root on a read-only mount of a 0555 directory only sometimes; creating a file is the real test.
        string probe = System.IO.Path.Combine(dir, $".ka-deploy-probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return e.Message.Contains("Read-only", StringComparison.OrdinalIgnoreCase) ? "read-only file system" : $"not writable ({e.Message})";
        }
    }

    /// <summary>A path to be checked by the action (a target, a device); only the empty string is refused here.</summary>
    public static Option<string?> Path(string name, string description, string valueName, string bad, string kind, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description, HelpName = valueName,
            CustomParser = r =>
            {
                string t = Token(r);
                if (t.Length == 0) r.AddError($"{Name(r)}: empty path");
                return t;
            },
        };
        return Register(o, bad, kind);
    }

    /// <summary>One of a few words.</summary>
    public static Option<string?> Choice(string name, string description, string[] choices, string? defaultValue, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description, HelpName = string.Join('|', choices),
            CustomParser = r =>
            {
                string t = Token(r);
                if (!choices.Contains(t)) r.AddError($"{Name(r)} '{t}': expected one of {string.Join(", ", choices)}");
                return t;
            },
        };
        if (defaultValue is not null) o.DefaultValueFactory = _ => defaultValue;
        return Register(o, "nonsense", string.Join(' ', choices));
    }

    /// <summary>Free text checked by a parser that throws <see cref="KaDeployException"/> with the reason.</summary>
    public static Option<string?> Checked(string name, string description, string valueName, Action<string> check, string bad, string? kind = null, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description, HelpName = valueName,
            CustomParser = r =>
            {
                string t = Token(r);
                try { check(t); }
                catch (KaDeployException e) { r.AddError(e.Message); }
                return t;
            },
        };
        return Register(o, bad, kind);
    }

    /// <summary>A repeatable path or glob (not empty).</summary>
    public static Option<string[]> Repeated(string name, string description, string valueName, params string[] aliases)
    {
        var o = new Option<string[]>(name, aliases)
        {
            Description = description, HelpName = valueName, AllowMultipleArgumentsPerToken = false,
            CustomParser = r =>
            {
                var values = r.Tokens.Select(t => t.Value).ToArray();
                if (values.Any(v => v.Length == 0)) r.AddError($"{Name(r)}: empty value");
                return values;
            },
        };
        return Register(o, "", "file");
    }

    /// <summary>A repeatable integer in [min, max].</summary>
    public static Option<int[]> RepeatedInt(string name, string description, int min, int max, string valueName = "N", params string[] aliases)
    {
        var o = new Option<int[]>(name, aliases)
        {
            Description = description, HelpName = valueName, AllowMultipleArgumentsPerToken = false,
            CustomParser = r =>
            {
                var values = new List<int>();
                foreach (var t in r.Tokens)
                {
                    if (int.TryParse(t.Value, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v >= min && v <= max) values.Add(v);
                    else r.AddError($"{Name(r)} '{t.Value}': expected a whole number from {min} to {max}");
                }
                return [.. values];
            },
        };
        return Register(o, (max + 1L).ToString(CultureInfo.InvariantCulture));
    }
}
