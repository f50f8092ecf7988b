using System.CommandLine;
using PeftSharp.Privacy;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp dp epsilon</c>: the (ε, δ) that DP-SGD with Poisson sampling spends, from the RDP accountant, or with
/// <c>--target-epsilon</c> the smallest noise multiplier that stays within a budget. Plans a private run before it starts.
/// </summary>
public static class DpCommand
{
    public static Command Create()
    {
        var sampleRate = new Option<double>("--sample-rate") { Description = "Poisson sampling rate q = expected batch size / training examples, in (0, 1]", Required = true }.InRange(0, 1, minInclusive: false);
        var noise = new Option<double?>("--noise-multiplier") { Description = "σ: noise standard deviation / clipping norm" }.Above(0);
        var target = new Option<double?>("--target-epsilon") { Description = "instead of --noise-multiplier: find the smallest σ with ε ≤ this" }.Above(0);
        var steps = new Option<long>("--steps") { Description = "optimizer steps (sampled batches)", Required = true }.AtLeast(1);
        var delta = new Option<double>("--delta") { Description = "δ of the (ε, δ) guarantee, in (0, 1); usually below 1/training examples", Required = true }.InRange(0, 1, minInclusive: false, maxInclusive: false);
        var conversion = new Option<string>("--conversion")
        {
            Description = "RDP → (ε, δ): improved (Balle et al. 2020, Opacus' default) or classic (Mironov 2017: rdp − log δ/(α−1))",
            DefaultValueFactory = _ => "improved",
        };
        var json = CliOptions.Json();
        var epsilon = new Command("epsilon", "ε spent by DP-SGD (RDP accountant of the Poisson-subsampled Gaussian mechanism), or the σ for a target ε")
        {
            sampleRate, noise, target, steps, delta, conversion, json,
        };
        epsilon.SetAction(parse => CliErrors.Run(() =>
        {
            double q = parse.GetValue(sampleRate), d = parse.GetValue(delta);
            long t = parse.GetValue(steps);
            var conv = ParseConversion(parse.GetValue(conversion)!);
            var (sigma, eps) = (parse.GetValue(noise), parse.GetValue(target));
            if (sigma is null == eps is null) throw new PeftSharpException("give exactly one of --noise-multiplier and --target-epsilon");
            if (sigma is double s)
            {
                var spent = RdpAccountant.Epsilon(q, s, t, d, conversion: conv);
                Console.WriteLine($"ε = {spent.Epsilon:G6} at δ = {d:G3} (best Rényi order {spent.Order:G4}) after {t} steps, q = {q:G4}, σ = {s:G6}");
                if (parse.GetValue(json)) JsonOutput.Write(new { epsilon = spent.Epsilon, order = spent.Order });
            }
            else
            {
                var (found, spent) = RdpAccountant.NoiseMultiplierFor(eps!.Value, q, t, d, conversion: conv);
                Console.WriteLine($"noise multiplier σ = {found:G6} gives ε = {spent.Epsilon:G6} ≤ {eps:G6} at δ = {d:G3} after {t} steps, q = {q:G4}");
                if (parse.GetValue(json)) JsonOutput.Write(new { noise_multiplier = found, epsilon = spent.Epsilon });
            }
            return 0;
        }));
        return new Command("dp", "differential privacy: plan DP-SGD budgets") { epsilon };
    }

    public static RdpConversion ParseConversion(string name) => name.ToLowerInvariant() switch
    {
        "improved" => RdpConversion.Improved,
        "classic" => RdpConversion.Classic,
        _ => throw new PeftSharpException($"--conversion: expected improved or classic, got \"{name}\""),
    };
}
