using System.Diagnostics;
using System.Globalization;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Parts;

namespace KaDeploy.Install;

/// <summary>
/// Client side of a whole-node install: consumes a <see cref="PayloadKind.Parts"/> stream with a
/// <see cref="NodeInstaller"/>. The manifest comes first; the node is refused (node not in the list, disk too
/// small or in use) before anything is written. Each part is verified against its own SHA-256 as it ends; the
/// session checks the whole stream. Returns only after the clone is configured, bootable, synced and unmounted.
/// In a dry run the plan is printed and the parts are received and verified, but nothing is written.
/// </summary>
public sealed class InstallerSink(NodeInstallOptions options) : IPayloadSink
{
    /// <inheritdoc/>
    public string Description => options.DryRun ? $"install plan for {options.Disk} (dry run: nothing is written)" : $"install {options.Disk}";

    /// <summary>The installer after a run (phase times, plan), or null before.</summary>
    public NodeInstaller? Installer { get; private set; }

    /// <inheritdoc/>
    public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        var reader = new PartsReader(input);
        var first = await reader.NextPartAsync(cancellationToken).ConfigureAwait(false)
            ?? throw new KaDeployException("install stream has no manifest");
        if (first.Header.Kind != PartKind.Manifest) throw new KaDeployException($"install stream starts with {PartsFormat.Describe(first.Header)}, not the manifest");
        var json = await PartsReader.ReadAllAsync(first.Header, first.Content, InstallManifest.MaxBytes, cancellationToken).ConfigureAwait(false);
        // The manifest's own digest is checked before anything of it is trusted.
        var next = await reader.NextPartAsync(cancellationToken).ConfigureAwait(false);
        var manifest = InstallManifest.FromJson(json);

        await using var installer = new NodeInstaller(options);
        Installer = installer;
        string plan = await installer.PrepareAsync(manifest, cancellationToken).ConfigureAwait(false);
        options.Log((options.DryRun ? "dry run, nothing will be written; plan:\n" : "plan:\n") + plan.TrimEnd());
        if (!options.DryRun)
        {
            await installer.PartitionAndFormatAsync(cancellationToken).ConfigureAwait(false);
            await installer.MountAsync(cancellationToken).ConfigureAwait(false);
        }
        int total = manifest.Parts.Count + 1;
        // Numbered as the server's log, the live view and the report do: part 0 is the manifest, read above.
        while (next is { } part)
        {
            var clock = Stopwatch.StartNew();
            options.Log($"part {part.Header.Index}/{total - 1} {part.Header.Kind.ToString().ToLowerInvariant()} {part.Header.Name}: receiving");
            if (options.DryRun) await part.Content.CopyToAsync(Stream.Null, cancellationToken).ConfigureAwait(false);
            else await installer.ReceivePartAsync(part.Header, part.Content, cancellationToken).ConfigureAwait(false);
            next = await reader.NextPartAsync(cancellationToken).ConfigureAwait(false);   // verifies this part's digest
            long bytes = reader.Completed[^1].Bytes;
            options.Log(string.Create(CultureInfo.InvariantCulture,
                $"part {part.Header.Index}/{total - 1} {part.Header.Name}: {bytes / 1e6:0.0} MB in {clock.Elapsed.TotalSeconds:0.0} s, {PartsFormat.DigestName(reader.Digest)} verified"));
        }
        if (reader.Completed.Count != total)
            throw new KaDeployException($"install stream has {reader.Completed.Count} parts, the manifest lists {total}");
        if (options.DryRun)
        {
            options.Log("dry run: every part received and verified; nothing was written");
            return;
        }
        await installer.ConfigureAsync(cancellationToken).ConfigureAwait(false);
        await installer.InstallBootLoaderAsync(cancellationToken).ConfigureAwait(false);
        await installer.RunHooksAsync(cancellationToken).ConfigureAwait(false);
        await installer.FinishAsync(cancellationToken).ConfigureAwait(false);
        options.Log($"installed {options.Disk} as {installer.Node.Name}");
    }
}
