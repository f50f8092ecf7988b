using MathNet.Numerics;

namespace PeftSharp.Privacy;

/// <summary>How Rényi-DP is turned into an (ε, δ) guarantee.</summary>
public enum RdpConversion
{
    /// <summary>
    /// Balle et al. 2020 (Theorem 21 of arXiv:1905.09982): ε = rdp − (log δ + log α)/(α − 1) + log((α − 1)/α).
    /// What Opacus' <c>get_privacy_spent</c> and current TF-Privacy use; never larger than <see cref="Classic"/>.
    /// </summary>
    Improved,
    /// <summary>Mironov 2017, Proposition 3: ε = rdp − log δ/(α − 1). TF-Privacy's conversion before 2020.</summary>
    Classic,
}

/// <summary>An (ε, δ) guarantee and the Rényi order that gave it.</summary>
public readonly record struct PrivacySpent(double Epsilon, double Order);

/// <summary>
/// Rényi differential privacy of the Poisson-subsampled Gaussian mechanism (DP-SGD's step), composed over steps,
/// and its conversion to (ε, δ). The RDP of one step at order α is log(A_α)/(α − 1) (Mironov, Talwar, Zhang 2019,
/// "Rényi Differential Privacy of the Sampled Gaussian Mechanism", Section 3.3): a finite binomial sum for integer α,
/// and for fractional α the two convergent series split at z₀ = σ² log(1/q − 1) + 1/2. Composition over T steps
/// multiplies by T (Mironov 2017). The same analysis as TF-Privacy's and Opacus' RDP accountants, written from the
/// papers; erfc comes from Math.NET Numerics, with the asymptotic series where it would underflow.
/// </summary>
public static class RdpAccountant
{
    /// <summary>Opacus' default orders: 1.1, 1.2, …, 10.9, then 12, 13, …, 63.</summary>
    public static IReadOnlyList<double> DefaultOrders { get; } =
        Enumerable.Range(1, 99).Select(x => 1 + x / 10.0).Concat(Enumerable.Range(12, 52).Select(x => (double)x)).ToArray();

    /// <summary>Checks the parameters of a DP-SGD run; the messages name the CLI flags.</summary>
    /// <exception cref="PeftSharpException">q outside (0, 1], σ ≤ 0, steps &lt; 0, or δ outside (0, 1).</exception>
    public static void Validate(double sampleRate, double? noiseMultiplier, long steps, double delta)
    {
        if (!(sampleRate > 0 && sampleRate <= 1)) throw new PeftSharpException($"--sample-rate: expected a probability in (0, 1], got {sampleRate}");
        if (noiseMultiplier is double s && !(s > 0 && double.IsFinite(s))) throw new PeftSharpException($"--noise-multiplier: expected a positive number, got {s}");
        if (steps < 0) throw new PeftSharpException($"--steps: expected 0 or more, got {steps}");
        if (!(delta > 0 && delta < 1)) throw new PeftSharpException($"--delta: expected a probability in (0, 1), got {delta}");
    }

    /// <summary>RDP at order α of one step of the sampled Gaussian mechanism with sampling rate q and noise multiplier σ.</summary>
    public static double Rdp(double q, double sigma, double order)
    {
        if (order <= 1) throw new ArgumentOutOfRangeException(nameof(order), order, "Rényi orders must be greater than 1");
        if (q == 0) return 0;
        if (sigma == 0 || double.IsPositiveInfinity(order)) return double.PositiveInfinity;
        if (q == 1) return order / (2 * sigma * sigma);
        double logA = order == Math.Floor(order) && order < int.MaxValue ? LogAInteger(q, sigma, (int)order) : LogAFractional(q, sigma, order);
        return logA / (order - 1);
    }

    /// <summary>RDP at each order after <paramref name="steps"/> compositions of the same step.</summary>
    public static double[] Rdp(double q, double sigma, long steps, IReadOnlyList<double> orders) =>
        orders.Select(a => Rdp(q, sigma, a) * steps).ToArray();

    /// <summary>The smallest ε over the orders at which the RDP values give (ε, δ)-DP.</summary>
    public static PrivacySpent Epsilon(IReadOnlyList<double> orders, IReadOnlyList<double> rdp, double delta, RdpConversion conversion = RdpConversion.Improved)
    {
        if (orders.Count != rdp.Count || orders.Count == 0) throw new ArgumentException("one RDP value per order is needed", nameof(rdp));
        double best = double.PositiveInfinity, bestOrder = double.NaN;
        for (int i = 0; i < orders.Count; i++)
        {
            double a = orders[i];
            double eps = conversion == RdpConversion.Classic
                ? rdp[i] - Math.Log(delta) / (a - 1)
                : rdp[i] - (Math.Log(delta) + Math.Log(a)) / (a - 1) + Math.Log((a - 1) / a);
            if (!double.IsNaN(eps) && eps < best) (best, bestOrder) = (eps, a);
        }
        return new PrivacySpent(Math.Max(best, 0), bestOrder);
    }

    /// <summary>ε after <paramref name="steps"/> DP-SGD steps with Poisson sampling rate q and noise multiplier σ.</summary>
    public static PrivacySpent Epsilon(double q, double sigma, long steps, double delta,
                                       IReadOnlyList<double>? orders = null, RdpConversion conversion = RdpConversion.Improved)
    {
        Validate(q, sigma, steps, delta);
        orders ??= DefaultOrders;
        return Epsilon(orders, Rdp(q, sigma, steps, orders), delta, conversion);
    }

    /// <summary>
    /// The smallest noise multiplier whose ε after <paramref name="steps"/> steps is at most <paramref name="targetEpsilon"/>
    /// (bisection on σ, ε being decreasing in σ, to a relative width of 1e-6, returning the side that meets the target).
    /// </summary>
    /// <exception cref="PeftSharpException">The target cannot be met with any σ up to 10⁴ (e.g. ε too small for δ).</exception>
    public static (double NoiseMultiplier, PrivacySpent Spent) NoiseMultiplierFor(double targetEpsilon, double q, long steps, double delta,
        IReadOnlyList<double>? orders = null, RdpConversion conversion = RdpConversion.Improved)
    {
        if (!(targetEpsilon > 0 && double.IsFinite(targetEpsilon))) throw new PeftSharpException($"--target-epsilon: expected a positive number, got {targetEpsilon}");
        Validate(q, null, steps, delta);
        orders ??= DefaultOrders;
        var at = (double sigma) => Epsilon(q, sigma, steps, delta, orders, conversion);
        if (steps == 0) return (0, new PrivacySpent(0, double.NaN));
        double lo = 1e-3, hi = 1;
        while (at(hi).Epsilon > targetEpsilon)
        {
            lo = hi;
            hi *= 2;
            if (hi > 1e4) throw new PeftSharpException($"--target-epsilon {targetEpsilon}: not reachable with δ = {delta} (even a noise multiplier of 10^4 spends more)");
        }
        if (at(lo).Epsilon <= targetEpsilon) return (lo, at(lo));
        while (hi - lo > 1e-6 * hi)
        {
            double mid = (lo + hi) / 2;
            if (at(mid).Epsilon <= targetEpsilon) hi = mid; else lo = mid;
        }
        return (hi, at(hi));
    }

    // log A_α for integer α: Σ_{i=0..α} C(α, i) (1 − q)^{α−i} q^i exp((i² − i)/(2σ²)), summed in log space.
    static double LogAInteger(double q, double sigma, int alpha)
    {
        double logA = double.NegativeInfinity, logBinom = 0;
        for (int i = 0; i <= alpha; i++)
        {
            if (i > 0) logBinom += Math.Log(alpha - i + 1) - Math.Log(i);
            double term = logBinom + i * Math.Log(q) + (alpha - i) * Math.Log(1 - q) + (i * (double)i - i) / (2 * sigma * sigma);
            logA = LogAdd(logA, term);
        }
        return logA;
    }

    // log A_α for fractional α: the integral of μ₀ (μ/μ₀)^α split at z₀, each side an alternating-sign binomial series
    // whose terms carry erfc tails; summed until both new terms fall below e^−30.
    static double LogAFractional(double q, double sigma, double alpha)
    {
        double logA0 = double.NegativeInfinity, logA1 = double.NegativeInfinity;
        double z0 = sigma * sigma * Math.Log(1 / q - 1) + 0.5;
        double logAbsBinom = 0, binomSign = 1;
        for (int i = 0; ; i++)
        {
            if (i > 0)
            {
                double factor = (alpha - i + 1) / i;   // C(α, i) = C(α, i − 1) (α − i + 1)/i
                logAbsBinom += Math.Log(Math.Abs(factor));
                if (factor < 0) binomSign = -binomSign;
            }
            double j = alpha - i;
            double logT0 = logAbsBinom + i * Math.Log(q) + j * Math.Log(1 - q);
            double logT1 = logAbsBinom + j * Math.Log(q) + i * Math.Log(1 - q);
            double logE0 = Math.Log(0.5) + LogErfc((i - z0) / (Math.Sqrt(2) * sigma));
            double logE1 = Math.Log(0.5) + LogErfc((z0 - j) / (Math.Sqrt(2) * sigma));
            double logS0 = logT0 + (i * (double)i - i) / (2 * sigma * sigma) + logE0;
            double logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
            if (binomSign > 0)
            {
                logA0 = LogAdd(logA0, logS0);
                logA1 = LogAdd(logA1, logS1);
            }
            else
            {
                logA0 = LogSub(logA0, logS0);
                logA1 = LogSub(logA1, logS1);
            }
            if (Math.Max(logS0, logS1) < -30) break;
            if (i > 100_000) throw new InvalidOperationException($"RDP series did not converge (q = {q}, σ = {sigma}, α = {alpha})");
        }
        return LogAdd(logA0, logA1);
    }

    /// <summary>log(erfc(x)), accurate where erfc underflows: the asymptotic series −x² − log(x√π) + log(1 − 1/(2x²) + 3/(4x⁴) − …) above x = 10.</summary>
    internal static double LogErfc(double x)
    {
        if (x < 10) return Math.Log(SpecialFunctions.Erfc(x));
        double inv2 = 1 / (2 * x * x), series = 1, term = 1;
        for (int k = 1; k <= 6; k++)
        {
            term *= -(2 * k - 1) * inv2;
            series += term;
        }
        return -x * x - Math.Log(x * Math.Sqrt(Math.PI)) + Math.Log(series);
    }

    static double LogAdd(double x, double y)
    {
        double a = Math.Min(x, y), b = Math.Max(x, y);
        return double.IsNegativeInfinity(a) ? b : Math.Log(1 + Math.Exp(a - b)) + b;
    }

    static double LogSub(double x, double y)
    {
        if (double.IsNegativeInfinity(y)) return x;
        if (x <= y) return double.NegativeInfinity; // rounding: the exact difference is non-negative and tiny
        double d = x - y;
        // log(1 − e^−d), with 1 − e^−d by its series where the subtraction would cancel.
        double oneMinus = d < 1e-5 ? d - d * d / 2 + d * d * d / 6 : 1 - Math.Exp(-d);
        return Math.Log(oneMinus) + x;
    }
}
