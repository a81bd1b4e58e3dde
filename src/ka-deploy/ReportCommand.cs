using System.CommandLine;
using KaDeploy.Reporting;

namespace KaDeploy.Cli;

/// <summary>`ka-deploy report RUN.json`: the summary again, the failures with their reasons, and an SVG timeline.</summary>
internal static class ReportCommand
{
    public static Command Command()
    {
        var cmd = new Command("report", "Print a session report (from --report) again and draw its timeline as SVG: bytes over time per node, failures and repairs marked.");
        var file = new Argument<string>("RUN.json") { Description = "A report written by `ka-deploy server --report`" };
        file.Validators.Add(r =>
        {
            string t = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
            if (!File.Exists(t)) r.AddError($"report {t}: no such file");
        });
        var svg = Opt.OutputFile("--svg", "Where to write the timeline (default: the report's name with .svg)");
        var noSvg = Opt.Flag("--no-svg", "Only print the summary");
        cmd.Arguments.Add(file);
        cmd.Options.Add(svg);
        cmd.Options.Add(noSvg);
        cmd.SetAction(p =>
        {
            string path = p.GetValue(file)!;
            SessionReport report;
            try { report = SessionReport.ReadJson(path); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new KaDeployException($"report {path}: {e.Message}"); }
            var inv = System.Globalization.CultureInfo.InvariantCulture;
            Console.Out.WriteLine(string.Create(inv, $"session '{report.Session}' started {report.Started:yyyy-MM-dd HH:mm:ss} UTC, {report.Source}, compression {report.Compression}"));
            Console.Out.Write(report.FormatTable());
            foreach (var e in report.Events.Where(e => e.Kind != "verified").OrderBy(e => e.Seconds))
            {
                var n = report.Nodes.Find(x => x.Id == e.Node);
                Console.Out.WriteLine(string.Create(inv, $"{e.Seconds,8:0.00} s  {e.Kind,-9} node {e.Node}{(n is null ? "" : $" ({n.Name}, place {n.Place})")}{(e.Message.Length > 0 ? ": " + e.Message : "")}"));
            }
            if (!report.Success && report.Message.Length > 0) Console.Out.WriteLine("verdict: " + report.Message);
            if (!p.GetValue(noSvg))
            {
                string output = p.GetValue(svg) ?? Path.ChangeExtension(path, ".svg");
                if (Opt.CheckWritableFile(output) is { } why) throw new KaDeployException($"--svg {output}: {why}");
                File.WriteAllText(output, Timeline.ToSvg(report));
                Console.Out.WriteLine($"timeline: {output}");
            }
            return report.Success ? 0 : 1;
        });
        return cmd;
    }
}
