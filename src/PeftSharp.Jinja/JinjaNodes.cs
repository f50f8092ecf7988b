namespace PeftSharp.Jinja;

// The template's syntax tree: expressions, then statements. Built by JinjaParser, run by JinjaRenderer.

internal abstract record Expr(int Line);
internal sealed record LiteralExpr(object? Value, int Line) : Expr(Line);
internal sealed record NameExpr(string Name, int Line) : Expr(Line);
internal sealed record AttributeExpr(Expr Target, string Name, int Line) : Expr(Line);
internal sealed record ItemExpr(Expr Target, Expr Key, int Line) : Expr(Line);
internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Line) : Expr(Line);
/// <summary>A call's arguments: f(a, b, *more, key=c, **named).</summary>
internal sealed record Arguments(IReadOnlyList<Expr> Positional, IReadOnlyList<(string Name, Expr Value)> Named, Expr? Star = null, Expr? DoubleStar = null);
/// <summary>One filter of a chain such as <c>trim | upper</c> in {% filter %} and {% set x | … %} blocks.</summary>
internal sealed record FilterCall(string Name, Arguments Args, int Line);
internal sealed record CallExpr(Expr Callee, Arguments Args, int Line) : Expr(Line);
internal sealed record FilterExpr(Expr Input, string Name, Arguments Args, int Line) : Expr(Line);
internal sealed record TestExpr(Expr Input, string Name, Arguments Args, bool Negated, int Line) : Expr(Line);
/// <summary>Unary "-", "+" or "not".</summary>
internal sealed record UnaryExpr(string Op, Expr Operand, int Line) : Expr(Line);
/// <summary>Arithmetic (+ - * / // % **), concatenation (~), and the short-circuit "and" / "or".</summary>
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Line) : Expr(Line);
/// <summary>A comparison chain: a == b, a &lt; b &lt; c, x in y, x not in y ("notin").</summary>
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Op, Expr Right)> Rest, int Line) : Expr(Line);
internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else, int Line) : Expr(Line);
internal sealed record ListExpr(IReadOnlyList<Expr> Items, int Line, bool IsTuple = false) : Expr(Line);
internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Items, int Line) : Expr(Line);

internal abstract record Node(int Line);
internal sealed record TextNode(string Text, int Line) : Node(Line);
internal sealed record OutputNode(Expr Value, int Line) : Node(Line);
internal sealed record IfNode(IReadOnlyList<(Expr Condition, IReadOnlyList<Node> Body)> Branches, IReadOnlyList<Node> Else, int Line) : Node(Line);
internal sealed record ForNode(IReadOnlyList<string> Targets, Expr Iterable, Expr? Condition, IReadOnlyList<Node> Body, IReadOnlyList<Node> Else, int Line) : Node(Line);
/// <summary>{% set a = … %}, {% set a, b = … %} or {% set ns.attr = … %}.</summary>
internal sealed record SetNode(IReadOnlyList<string> Names, string? Attribute, Expr Value, int Line) : Node(Line);
/// <summary>{% set name %}…{% endset %} or {% set ns.attr | filter %}…{% endset %}: the rendered (filtered) body becomes the value.</summary>
internal sealed record SetBlockNode(string Name, string? Attribute, IReadOnlyList<FilterCall> Filters, IReadOnlyList<Node> Body, int Line) : Node(Line);
/// <summary>
/// A macro. As in Jinja2, it takes extra positional arguments only if its body mentions <c>varargs</c>, and
/// unknown keyword arguments only if it mentions <c>kwargs</c>; otherwise they are an error.
/// </summary>
internal sealed record MacroNode(string Name, IReadOnlyList<string> Parameters, IReadOnlyList<Expr?> Defaults, IReadOnlyList<Node> Body,
    bool TakesVarargs, bool TakesKwargs, int Line) : Node(Line);
internal sealed record BreakNode(int Line) : Node(Line);
internal sealed record ContinueNode(int Line) : Node(Line);
/// <summary>{% with a = …, b = … %}…{% endwith %}: names that exist only in the body.</summary>
internal sealed record WithNode(IReadOnlyList<(string Name, Expr Value)> Assignments, IReadOnlyList<Node> Body, int Line) : Node(Line);
/// <summary>transformers' {% generation %}…{% endgeneration %}: marks the text the assistant produces.</summary>
internal sealed record GenerationNode(IReadOnlyList<Node> Body, int Line) : Node(Line);
/// <summary>{% filter name | other %}…{% endfilter %}: the rendered body through the filters, in order.</summary>
internal sealed record FilterBlockNode(IReadOnlyList<FilterCall> Filters, IReadOnlyList<Node> Body, int Line) : Node(Line);
