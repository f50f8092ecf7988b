using System.CommandLine;
using PeftSharp.Privacy;
using PeftSharp.Training;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>train --dp-…</c>: DP-SGD (per-example clipping, Gaussian noise, Poisson sampling; see docs/privacy.md). Any of
/// these flags turns it on. --batch-size × --grad-accum is the expected batch size; --batch-size is also the
/// micro-batch of each forward.
/// </summary>
public sealed class DpTrainOptions
{
    public Option<double?> MaxGradNorm = new Option<double?>("--dp-max-grad-norm") { Description = "DP-SGD: clip each example's gradient to this L2 norm (default 1.0)" }.Above(0);
    public Option<double?> NoiseMultiplier = new Option<double?>("--dp-noise-multiplier") { Description = "DP-SGD: noise standard deviation / clipping norm (σ)" }.Above(0);
    public Option<double?> TargetEpsilon = new Option<double?>("--dp-target-epsilon") { Description = "DP-SGD: instead of --dp-noise-multiplier, the smallest σ that spends at most this ε" }.Above(0);
    public Option<double?> Delta = new Option<double?>("--dp-delta") { Description = "DP-SGD: δ of the reported (ε, δ) (default 1e-5)" }.InRange(0, 1, minInclusive: false, maxInclusive: false);

    public Option[] All => [MaxGradNorm, NoiseMultiplier, TargetEpsilon, Delta];

    /// <summary>True when any --dp-… flag is given (on the command line or in --config).</summary>
    public bool Enabled(TrainSettings s) => All.Any(o => s.Get((Option<double?>)o) is not null);

    /// <exception cref="PeftSharpException">Flags that DP-SGD cannot honour.</exception>
    public DpSgdOptions Build(TrainSettings s, string method, bool gradientCheckpointing, int batchSize, int gradAccum, ulong seed)
    {
        if (method != "lora") throw new PeftSharpException($"--dp-*: DP-SGD trains --method lora only, got \"{method}\"");
        if (gradientCheckpointing) throw new PeftSharpException("--dp-*: DP-SGD cannot be combined with --gradient-checkpointing");
        var (noise, target) = (s.Get(NoiseMultiplier), s.Get(TargetEpsilon));
        if (noise is null == target is null) throw new PeftSharpException("--dp-*: give exactly one of --dp-noise-multiplier and --dp-target-epsilon");
        var options = new DpSgdOptions
        {
            MaxGradNorm = s.Get(MaxGradNorm) ?? 1.0,
            NoiseMultiplier = noise ?? 1.0,   // replaced by the solved σ when --dp-target-epsilon is given
            Delta = s.Get(Delta) ?? 1e-5,
            ExpectedBatchSize = batchSize * gradAccum,
            MicroBatchSize = batchSize,
            Seed = seed,
        };
        options.Validate();
        return options;
    }

    /// <summary>With --dp-target-epsilon, sets σ for the run's steps; returns a line for stderr.</summary>
    public string Plan(TrainSettings s, DpSgd dp, long totalSteps)
    {
        if (s.Get(TargetEpsilon) is double target)
        {
            var (sigma, _) = RdpAccountant.NoiseMultiplierFor(target, dp.SampleRate, totalSteps, dp.Options.Delta);
            dp.NoiseMultiplier = sigma;
        }
        var spent = dp.Spent(totalSteps);
        return $"DP-SGD: q = {dp.SampleRate:G4}, σ = {dp.NoiseMultiplier:G5}, C = {dp.Options.MaxGradNorm:G4}, {totalSteps} steps → ε = {spent.Epsilon:G4} at δ = {dp.Options.Delta:G3}";
    }
}
