namespace PeftSharp.Jinja;

/// <summary>
/// A parsed Jinja2 template, rendered as transformers renders chat templates (trim_blocks, lstrip_blocks,
/// loop controls, the {% generation %} tag, transformers' tojson). This is the subset of Jinja2 that model
/// chat templates use: statements if/elif/else, for (with else, filters, unpacking, loop.*), set (also
/// namespace attributes and blocks), macro, with, filter blocks, break/continue, raw; Python-like expressions
/// with Jinja's precedence; the common filters, tests and string/dict methods. Not supported: template
/// inheritance and includes, call blocks, recursive loops, autoescaping, integers beyond 64 bits.
/// </summary>
public sealed class JinjaTemplate
{
    readonly IReadOnlyList<Node> _body;
    readonly IReadOnlyDictionary<IReadOnlyList<Node>, HashSet<string>> _unsetAtStart;

    JinjaTemplate(IReadOnlyList<Node> body, bool hasGenerationBlocks)
    {
        _body = body;
        _unsetAtStart = JinjaScopes.UnsetAtStart(body);
        HasGenerationBlocks = hasGenerationBlocks;
    }

    /// <summary>Whether the template marks assistant output with {% generation %} … {% endgeneration %}.</summary>
    public bool HasGenerationBlocks { get; }

    /// <exception cref="JinjaException">A syntax error, with its line.</exception>
    public static JinjaTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var body = JinjaParser.Parse(source);
        return new JinjaTemplate(body, ContainsGeneration(body));
    }

    /// <summary>Renders with <paramref name="variables"/> (values as described in <see cref="JinjaValues"/>).</summary>
    /// <exception cref="JinjaException">A runtime error, or the template's own raise_exception (<see cref="JinjaRaisedException"/>).</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables) => RenderWithGenerationSpans(variables).Text;

    /// <summary>Renders, and returns where the text written inside {% generation %} blocks starts and ends.</summary>
    public (string Text, IReadOnlyList<(int Start, int End)> GenerationSpans) RenderWithGenerationSpans(IReadOnlyDictionary<string, object?> variables)
    {
        ArgumentNullException.ThrowIfNull(variables);
        return JinjaRenderer.Render(_body, _unsetAtStart, variables);
    }

    static bool ContainsGeneration(IEnumerable<Node> nodes) => nodes.Any(n => n switch
    {
        GenerationNode => true,
        IfNode i => i.Branches.Any(b => ContainsGeneration(b.Body)) || ContainsGeneration(i.Else),
        ForNode f => ContainsGeneration(f.Body) || ContainsGeneration(f.Else),
        MacroNode m => ContainsGeneration(m.Body),
        SetBlockNode s => ContainsGeneration(s.Body),
        FilterBlockNode fb => ContainsGeneration(fb.Body),
        _ => false,
    });
}
