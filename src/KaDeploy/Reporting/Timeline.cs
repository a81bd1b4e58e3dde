using System.Globalization;
using System.Security;
using System.Text;

namespace KaDeploy.Reporting;

/// <summary>
/// A picture of a run as SVG: payload bytes over time, one line per node, failures marked with a red cross (and
/// the reason in the legend and in the cross's tooltip), repairs with a blue ring. A slow node is the line that
/// lags; a failed node is the line that stops at a cross. Plain SVG 1.1, no script, no external resources.
/// </summary>
public static class Timeline
{
    private const int Width = 960, PlotLeft = 80, PlotTop = 50, PlotWidth = 600, PlotHeight = 320;
    private static readonly string[] Palette =
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31"];

    /// <summary>Renders <paramref name="report"/> as an SVG document.</summary>
    public static string ToSvg(SessionReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var inv = CultureInfo.InvariantCulture;
        var nodes = report.Nodes.OrderBy(n => n.Place, PlaceComparer.Instance).ThenBy(n => n.Id).ToList();
        double maxT = Math.Max(report.Seconds, nodes.SelectMany(n => n.Samples).Select(s => s.Seconds).DefaultIfEmpty(0).Max());
        maxT = Math.Max(maxT, 0.001);
        long maxB = Math.Max(report.PayloadBytes, nodes.SelectMany(n => n.Samples).Select(s => s.Bytes).DefaultIfEmpty(0).Max());
        maxB = Math.Max(maxB, 1);
        int legendRows = nodes.Count + 1;
        int height = Math.Max(PlotTop + PlotHeight + 60, PlotTop + 20 + legendRows * 18);
        double X(double t) => PlotLeft + t / maxT * PlotWidth;
        double Y(long b) => PlotTop + PlotHeight - (double)b / maxB * PlotHeight;
        string F(double v) => v.ToString("0.#", inv);

        var sb = new StringBuilder();
        sb.Append(inv, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{height}\" viewBox=\"0 0 {Width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        sb.Append(inv, $"<rect width=\"{Width}\" height=\"{height}\" fill=\"white\"/>\n");
        int verified = nodes.Count(n => n.Verified);
        string title = $"ka-deploy session '{report.Session}': {verified}/{nodes.Count} nodes verified, {ProgressLine.Size(report.PayloadBytes)} in {report.Seconds:0.0} s"
            + (report.Arity == 1 ? " (chain)" : $" (tree of arity {report.Arity})");
        sb.Append(inv, $"<text x=\"{PlotLeft}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{Esc(title)}</text>\n");

        // Axes and grid: five steps each way.
        sb.Append(inv, $"<g stroke=\"#ddd\">\n");
        for (int i = 0; i <= 5; i++)
        {
            double y = PlotTop + PlotHeight * i / 5.0, x = PlotLeft + PlotWidth * i / 5.0;
            sb.Append(inv, $"<line x1=\"{PlotLeft}\" y1=\"{F(y)}\" x2=\"{PlotLeft + PlotWidth}\" y2=\"{F(y)}\"/><line x1=\"{F(x)}\" y1=\"{PlotTop}\" x2=\"{F(x)}\" y2=\"{PlotTop + PlotHeight}\"/>\n");
        }
        sb.Append("</g>\n");
        sb.Append(inv, $"<rect x=\"{PlotLeft}\" y=\"{PlotTop}\" width=\"{PlotWidth}\" height=\"{PlotHeight}\" fill=\"none\" stroke=\"#333\"/>\n");
        for (int i = 0; i <= 5; i++)
        {
            double y = PlotTop + PlotHeight * (5 - i) / 5.0, x = PlotLeft + PlotWidth * i / 5.0;
            sb.Append(inv, $"<text x=\"{PlotLeft - 6}\" y=\"{F(y + 4)}\" text-anchor=\"end\">{Esc(ProgressLine.Size(maxB * i / 5))}</text>\n");
            sb.Append(inv, $"<text x=\"{F(x)}\" y=\"{PlotTop + PlotHeight + 16}\" text-anchor=\"middle\">{(maxT * i / 5).ToString("0.#", inv)} s</text>\n");
        }
        sb.Append(inv, $"<text x=\"{PlotLeft + PlotWidth / 2}\" y=\"{PlotTop + PlotHeight + 36}\" text-anchor=\"middle\">time since the session started</text>\n");
        sb.Append(inv, $"<text x=\"16\" y=\"{PlotTop + PlotHeight / 2}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {PlotTop + PlotHeight / 2})\">payload written</text>\n");

        // One line per node; its legend row says place, name, state and (for a failure) why.
        int legendX = PlotLeft + PlotWidth + 20;
        sb.Append(inv, $"<text x=\"{legendX}\" y=\"{PlotTop}\" font-weight=\"bold\">{(report.Arity == 1 ? "chain" : "tree")} node (state)</text>\n");
        for (int i = 0; i < nodes.Count; i++)
        {
            var n = nodes[i];
            string color = Palette[i % Palette.Length];
            var points = n.Samples.Select(s => $"{F(X(s.Seconds))},{F(Y(s.Bytes))}");
            string label = $"{(n.Place.Length > 0 ? n.Place : "-")} {(n.Name.Length > 0 ? n.Name : n.Address)} ({n.State.ToString().ToLowerInvariant()})";
            sb.Append(inv, $"<g><title>{Esc(label + (n.Message.Length > 0 ? ": " + n.Message : ""))}</title>");
            if (n.Samples.Count > 0)
                sb.Append(inv, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{(n.Verified ? 1.8 : 2.6).ToString(inv)}\"{(n.Verified ? "" : " stroke-dasharray=\"6 3\"")} points=\"{string.Join(' ', points)}\"/>");
            sb.Append("</g>\n");
            double ly = PlotTop + 18 * (i + 1);
            sb.Append(inv, $"<line x1=\"{legendX}\" y1=\"{F(ly - 4)}\" x2=\"{legendX + 18}\" y2=\"{F(ly - 4)}\" stroke=\"{color}\" stroke-width=\"3\"/>");
            sb.Append(inv, $"<text x=\"{legendX + 24}\" y=\"{F(ly)}\"{(n.State == NodeState.Failed ? " fill=\"#c00\"" : "")}>{Esc(Cut(label, 40))}</text>\n");
        }

        // Events: failures as red crosses where the node's line stopped, repairs as blue rings.
        foreach (var e in report.Events)
        {
            var n = nodes.Find(x => x.Id == e.Node);
            long bytes = n is null ? 0 : n.Samples.Where(s => s.Seconds <= e.Seconds + 1e-9).Select(s => s.Bytes).DefaultIfEmpty(0).Max();
            double x = X(e.Seconds), y = Y(bytes);
            string tip = Esc($"{e.Kind} at {e.Seconds:0.00} s: node {e.Node}{(n is null ? "" : $" ({n.Name}, place {n.Place})")}{(e.Message.Length > 0 ? ": " + e.Message : "")}");
            switch (e.Kind)
            {
                case "failed":
                    sb.Append(inv, $"<g stroke=\"#d00\" stroke-width=\"3\"><title>{tip}</title><line x1=\"{F(x - 7)}\" y1=\"{F(y - 7)}\" x2=\"{F(x + 7)}\" y2=\"{F(y + 7)}\"/><line x1=\"{F(x - 7)}\" y1=\"{F(y + 7)}\" x2=\"{F(x + 7)}\" y2=\"{F(y - 7)}\"/></g>\n");
                    sb.Append(inv, $"<text x=\"{F(x + 10)}\" y=\"{F(y - 8)}\" fill=\"#d00\">{Esc(Cut($"{n?.Name ?? $"node {e.Node}"} failed: {e.Message}", 70))}</text>\n");
                    break;
                case "repaired" or "repair" or "moved":
                    sb.Append(inv, $"<circle cx=\"{F(x)}\" cy=\"{F(y)}\" r=\"6\" fill=\"none\" stroke=\"#06c\" stroke-width=\"2.5\"><title>{tip}</title></circle>\n");
                    break;
            }
        }
        sb.Append(inv, $"<text x=\"{PlotLeft}\" y=\"{height - 8}\" fill=\"#555\">dashed: not verified; red cross: failure (hover for the reason); blue ring: repair</text>\n");
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    private static string Cut(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "…";

    private static string Esc(string s) => SecurityElement.Escape(s) ?? "";
}
