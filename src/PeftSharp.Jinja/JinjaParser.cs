using System.Globalization;

namespace PeftSharp.Jinja;

/// <summary>
/// Recursive-descent parser for the Jinja2 subset chat templates use, with Jinja's operator precedence
/// (lowest first): <c>x if c else y</c>, <c>or</c>, <c>and</c>, <c>not</c>, comparisons and <c>in</c>,
/// <c>+ -</c>, <c>~</c>, <c>* / // %</c>, <c>**</c>, unary <c>-</c>, then postfix <c>.attr</c>, <c>[key]</c>,
/// <c>(call)</c>, <c>| filter</c> and <c>is test</c>, which bind tightest (<c>a + b | trim</c> trims b only).
/// </summary>
internal sealed class JinjaParser
{
    readonly List<Token> _tokens;
    int _pos;

    // Jinja2 rejects an unknown filter or test when it compiles the template, except inside an if statement or a
    // conditional expression (its "soft" frames), where it is an error only if that code runs. _soft counts the
    // soft contexts we are in (a for, macro, filter or set block inside one is hard again); unknown names found
    // in hard contexts wait in _unknownNames until the end, since "x | f if c" is only known to be soft at "if".
    int _soft;
    readonly List<JinjaException> _unknownNames = [];

    // Whether we are in a for loop's body, where break and continue may go (a macro's body is not, even in a loop).
    bool _inLoop;

    // The names each macro being parsed mentions, to know whether it takes varargs / kwargs.
    readonly List<HashSet<string>> _macroNames = [];

    JinjaParser(List<Token> tokens) => _tokens = tokens;

    public static IReadOnlyList<Node> Parse(string source)
    {
        var parser = new JinjaParser(JinjaLexer.Tokenize(source));
        var body = parser.ParseBody([], out _);
        if (parser._unknownNames.Count > 0) throw parser._unknownNames[0];
        return body;
    }

    // Runs parse with _soft set for soft (if statement, conditional expression) or reset for hard contexts, and
    // with _inLoop set or cleared if inLoop says so.
    T InContext<T>(bool soft, Func<T> parse, bool? inLoop = null)
    {
        var (savedSoft, savedInLoop) = (_soft, _inLoop);
        _soft = soft ? _soft + 1 : 0;
        _inLoop = inLoop ?? _inLoop;
        try { return parse(); }
        finally { (_soft, _inLoop) = (savedSoft, savedInLoop); }
    }

    void CheckKnown(string name, bool filter, int line)
    {
        if ((filter ? JinjaFilters.FilterNames : JinjaFilters.TestNames).Contains(name) || _soft > 0) return;
        _unknownNames.Add(new JinjaException($"unknown {(filter ? "filter" : "test")} '{name}'", line));
    }

    Token Current => _tokens[_pos];
    Token Next() => _tokens[_pos++];

    bool IsOperator(string op) => Current.Kind == TokenKind.Operator && Current.Value == op;
    bool IsName(string name) => Current.Kind == TokenKind.Name && Current.Value == name;

    bool SkipOperator(string op)
    {
        if (!IsOperator(op)) return false;
        _pos++;
        return true;
    }

    bool SkipName(string name)
    {
        if (!IsName(name)) return false;
        _pos++;
        return true;
    }

    void ExpectOperator(string op)
    {
        if (!SkipOperator(op)) throw Error($"expected '{op}', got {Describe(Current)}");
    }

    string ExpectName()
    {
        if (Current.Kind != TokenKind.Name) throw Error($"expected a name, got {Describe(Current)}");
        return Next().Value;
    }

    void ExpectBlockEnd()
    {
        if (Current.Kind != TokenKind.BlockEnd) throw Error($"expected the end of the tag '%}}', got {Describe(Current)}");
        _pos++;
    }

    JinjaException Error(string message) => new(message, Current.Line);

    static string Describe(Token t) => t.Kind switch
    {
        TokenKind.End => "the end of the template",
        TokenKind.BlockEnd => "'%}'",
        TokenKind.VariableEnd => "'}}'",
        TokenKind.String => $"the string '{t.Value}'",
        _ => $"'{t.Value}'",
    };

    // Statements until a block tag whose first word is one of `ends` (left unconsumed after the word), or the end.
    List<Node> ParseBody(string[] ends, out string? endedBy)
    {
        var nodes = new List<Node>();
        while (true)
        {
            var token = Current;
            switch (token.Kind)
            {
                case TokenKind.End:
                    if (ends.Length > 0) throw Error($"the template ended where '{{% {ends[^1]} %}}' was expected");
                    endedBy = null;
                    return nodes;
                case TokenKind.Text:
                    nodes.Add(new TextNode(Next().Value, token.Line));
                    break;
                case TokenKind.VariableBegin:
                    _pos++;
                    var value = ParseTuple(); // {{ a, b }} prints the tuple
                    if (Current.Kind != TokenKind.VariableEnd) throw Error($"expected '}}}}', got {Describe(Current)}");
                    _pos++;
                    nodes.Add(new OutputNode(value, token.Line));
                    break;
                case TokenKind.BlockBegin:
                    _pos++;
                    if (Current.Kind == TokenKind.Name && ends.Contains(Current.Value))
                    {
                        endedBy = Next().Value;
                        return nodes;
                    }
                    nodes.Add(ParseStatement());
                    break;
                default:
                    throw Error($"unexpected {Describe(token)}");
            }
        }
    }

    Node ParseStatement()
    {
        int line = Current.Line;
        string keyword = ExpectName();
        switch (keyword)
        {
            case "if": return ParseIf(line);
            case "for": return ParseFor(line);
            case "set": return ParseSet(line);
            case "macro": return ParseMacro(line);
            case "filter":
                return InContext(soft: false, () =>
                {
                    var filters = ParseFilterChain();
                    ExpectBlockEnd();
                    var body = ParseBody(["endfilter"], out _);
                    ExpectBlockEnd();
                    return new FilterBlockNode(filters, body, line);
                });
            case "generation":
                return InContext(soft: false, inLoop: false, parse: () => // transformers makes it a call block: its body is a macro's
                {
                    ExpectBlockEnd();
                    var body = ParseBody(["endgeneration"], out _);
                    ExpectBlockEnd();
                    return new GenerationNode(body, line);
                });
            case "with":
                return ParseWith(line);
            case "break" or "continue":
                // Jinja compiles these to Python's break / continue: outside a loop the template does not compile.
                if (!_inLoop) throw new JinjaException($"'{keyword}' outside a for loop", line);
                ExpectBlockEnd();
                return keyword == "break" ? new BreakNode(line) : new ContinueNode(line);
            default:
                throw new JinjaException($"unknown tag '{keyword}'", line);
        }
    }

    IfNode ParseIf(int line) => InContext(soft: true, () => ParseIfBranches(line));

    IfNode ParseIfBranches(int line)
    {
        var branches = new List<(Expr, IReadOnlyList<Node>)>();
        IReadOnlyList<Node> elseBody = [];
        var condition = ParseExpression();
        while (true)
        {
            ExpectBlockEnd();
            var body = ParseBody(["elif", "else", "endif"], out var endedBy);
            branches.Add((condition, body));
            if (endedBy == "elif")
            {
                condition = ParseExpression();
                continue;
            }
            if (endedBy == "else")
            {
                ExpectBlockEnd();
                elseBody = ParseBody(["endif"], out _);
            }
            ExpectBlockEnd();
            return new IfNode(branches, elseBody, line);
        }
    }

    ForNode ParseFor(int line)
    {
        bool parenthesised = SkipOperator("("); // for (k, v) in …
        var targets = new List<string> { ExpectName() };
        while (SkipOperator(",")) targets.Add(ExpectName());
        if (parenthesised) ExpectOperator(")");
        if (!SkipName("in")) throw Error($"expected 'in' in the for loop, got {Describe(Current)}");
        var iterable = ParseConditional(allowConditional: false);
        return InContext(soft: false, () =>
        {
            Expr? condition = SkipName("if") ? ParseExpression() : null;
            SkipName("recursive");
            ExpectBlockEnd();
            string? endedBy = null;
            var body = InContext(soft: false, inLoop: true, parse: () => ParseBody(["else", "endfor"], out endedBy));
            IReadOnlyList<Node> elseBody = [];
            if (endedBy == "else") // runs after the loop, so a break there belongs to an outer loop
            {
                ExpectBlockEnd();
                elseBody = ParseBody(["endfor"], out _);
            }
            ExpectBlockEnd();
            return new ForNode(targets, iterable, condition, body, elseBody, line);
        });
    }

    // {% with a = 1, b = x %}…{% endwith %}: the values are read outside, the names exist only inside.
    WithNode ParseWith(int line)
    {
        var assignments = new List<(string, Expr)>();
        while (Current.Kind != TokenKind.BlockEnd)
        {
            if (assignments.Count > 0) ExpectOperator(",");
            string name = ExpectName();
            ExpectOperator("=");
            assignments.Add((name, ParseExpression()));
        }
        ExpectBlockEnd();
        var body = ParseBody(["endwith"], out _);
        ExpectBlockEnd();
        return new WithNode(assignments, body, line);
    }

    // {% set a = … %}, {% set a, b = … %}, {% set ns.attr = … %}, or a block: {% set a %}…{% endset %},
    // {% set ns.attr | filter %}…{% endset %}.
    Node ParseSet(int line)
    {
        var names = new List<string> { ExpectName() };
        string? attribute = SkipOperator(".") ? ExpectName() : null;
        while (attribute is null && SkipOperator(",")) names.Add(ExpectName());
        if (names.Count == 1 && (Current.Kind == TokenKind.BlockEnd || IsOperator("|")))
            return InContext(soft: false, () =>
            {
                IReadOnlyList<FilterCall> filters = SkipOperator("|") ? ParseFilterChain() : [];
                ExpectBlockEnd();
                var body = ParseBody(["endset"], out _);
                ExpectBlockEnd();
                return new SetBlockNode(names[0], attribute, filters, body, line);
            });
        ExpectOperator("=");
        var value = ParseTuple();
        ExpectBlockEnd();
        return new SetNode(names, attribute, value, line);
    }

    MacroNode ParseMacro(int line) => InContext(soft: false, inLoop: false, parse: () =>
    {
        string name = ExpectName();
        var parameters = new List<string>();
        var defaults = new List<Expr?>();
        ExpectOperator("(");
        while (!SkipOperator(")"))
        {
            if (parameters.Count > 0) ExpectOperator(",");
            if (SkipOperator(")")) break;
            parameters.Add(ExpectName());
            defaults.Add(SkipOperator("=") ? ParseExpression() : null);
        }
        ExpectBlockEnd();
        var mentioned = new HashSet<string>(StringComparer.Ordinal);
        _macroNames.Add(mentioned);
        var body = ParseBody(["endmacro"], out _);
        _macroNames.RemoveAt(_macroNames.Count - 1);
        ExpectBlockEnd();
        return new MacroNode(name, parameters, defaults, body, mentioned.Contains("varargs"), mentioned.Contains("kwargs"), line);
    });

    // a, b, c without brackets is a tuple (in {% set %} and for parenthesised groups).
    Expr ParseTuple()
    {
        int line = Current.Line;
        var first = ParseExpression();
        if (!IsOperator(",")) return first;
        var items = new List<Expr> { first };
        while (SkipOperator(","))
        {
            if (Current.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd || IsOperator(")")) break;
            items.Add(ParseExpression());
        }
        return new ListExpr(items, line, IsTuple: true);
    }

    public Expr ParseExpression() => ParseConditional(allowConditional: true);

    Expr ParseConditional(bool allowConditional)
    {
        int unknownBefore = _unknownNames.Count;
        var expr = ParseOr();
        while (allowConditional && IsName("if"))
        {
            // All of "a if c else b" is soft, "a" included (see _soft).
            if (_soft == 0) _unknownNames.RemoveRange(unknownBefore, _unknownNames.Count - unknownBefore);
            int line = Next().Line;
            var (condition, otherwise) = InContext(soft: true, () => (ParseOr(), SkipName("else") ? ParseConditional(true) : null));
            expr = new ConditionalExpr(condition, expr, otherwise, line);
        }
        return expr;
    }

    Expr ParseOr()
    {
        var left = ParseAnd();
        while (IsName("or"))
        {
            int line = Next().Line;
            left = new BinaryExpr("or", left, ParseAnd(), line);
        }
        return left;
    }

    Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsName("and"))
        {
            int line = Next().Line;
            left = new BinaryExpr("and", left, ParseNot(), line);
        }
        return left;
    }

    Expr ParseNot()
    {
        if (IsName("not"))
        {
            int line = Next().Line;
            return new UnaryExpr("not", ParseNot(), line);
        }
        return ParseCompare();
    }

    Expr ParseCompare()
    {
        int line = Current.Line;
        var first = ParseAdditive();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Current.Kind == TokenKind.Operator && Current.Value is "==" or "!=" or "<" or ">" or "<=" or ">=")
                rest.Add((Next().Value, ParseAdditive()));
            else if (SkipName("in")) rest.Add(("in", ParseAdditive()));
            else if (IsName("not") && _tokens[_pos + 1] is { Kind: TokenKind.Name, Value: "in" })
            {
                _pos += 2;
                rest.Add(("notin", ParseAdditive()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, line);
    }

    Expr ParseAdditive()
    {
        var left = ParseConcat();
        while (Current.Kind == TokenKind.Operator && Current.Value is "+" or "-")
        {
            var op = Next();
            left = new BinaryExpr(op.Value, left, ParseConcat(), op.Line);
        }
        return left;
    }

    Expr ParseConcat()
    {
        var left = ParseMultiplicative();
        while (IsOperator("~"))
        {
            int line = Next().Line;
            left = new BinaryExpr("~", left, ParseMultiplicative(), line);
        }
        return left;
    }

    Expr ParseMultiplicative()
    {
        var left = ParsePower();
        while (Current.Kind == TokenKind.Operator && Current.Value is "*" or "/" or "//" or "%")
        {
            var op = Next();
            left = new BinaryExpr(op.Value, left, ParsePower(), op.Line);
        }
        return left;
    }

    Expr ParsePower()
    {
        var left = ParseUnary(withFilter: true);
        while (IsOperator("**"))
        {
            int line = Next().Line;
            left = new BinaryExpr("**", left, ParseUnary(withFilter: true), line);
        }
        return left;
    }

    Expr ParseUnary(bool withFilter)
    {
        Expr expr;
        if (Current.Kind == TokenKind.Operator && Current.Value is "-" or "+")
        {
            var op = Next();
            expr = new UnaryExpr(op.Value, ParseUnary(withFilter: false), op.Line);
        }
        else expr = ParsePrimary();
        expr = ParsePostfix(expr);
        return withFilter ? ParseFilters(expr) : expr;
    }

    Expr ParsePrimary()
    {
        var token = Next();
        switch (token.Kind)
        {
            case TokenKind.Name:
                return token.Value switch
                {
                    "true" or "True" => new LiteralExpr(true, token.Line),
                    "false" or "False" => new LiteralExpr(false, token.Line),
                    "none" or "None" => new LiteralExpr(null, token.Line),
                    _ => Mention(new NameExpr(token.Value, token.Line)),
                };
            case TokenKind.String:
            {
                string value = token.Value;
                while (Current.Kind == TokenKind.String) value += Next().Value; // "a" "b" is "ab", as in Python
                return new LiteralExpr(value, token.Line);
            }
            case TokenKind.Integer:
                return long.TryParse(token.Value, NumberStyles.None, CultureInfo.InvariantCulture, out long integer) ? new LiteralExpr(integer, token.Line)
                    : throw new JinjaException($"the integer {token.Value} does not fit in 64 bits", token.Line);
            case TokenKind.Float:
                return new LiteralExpr(double.Parse(token.Value, CultureInfo.InvariantCulture), token.Line);
            case TokenKind.Operator when token.Value == "(":
            {
                if (SkipOperator(")")) return new ListExpr([], token.Line, IsTuple: true);
                var inner = ParseTuple();
                ExpectOperator(")");
                return inner;
            }
            case TokenKind.Operator when token.Value == "[":
            {
                var items = new List<Expr>();
                while (!SkipOperator("]"))
                {
                    if (items.Count > 0) ExpectOperator(",");
                    if (SkipOperator("]")) break;
                    items.Add(ParseExpression());
                }
                return new ListExpr(items, token.Line);
            }
            case TokenKind.Operator when token.Value == "{":
            {
                var items = new List<(Expr, Expr)>();
                while (!SkipOperator("}"))
                {
                    if (items.Count > 0) ExpectOperator(",");
                    if (SkipOperator("}")) break;
                    var key = ParseExpression();
                    ExpectOperator(":");
                    items.Add((key, ParseExpression()));
                }
                return new DictExpr(items, token.Line);
            }
            default:
                _pos--;
                throw Error($"expected a value, got {Describe(token)}");
        }
    }

    Expr ParsePostfix(Expr expr)
    {
        while (true)
        {
            int line = Current.Line;
            if (SkipOperator("."))
            {
                if (Current.Kind == TokenKind.Integer) expr = new ItemExpr(expr, new LiteralExpr(long.Parse(Next().Value, CultureInfo.InvariantCulture), line), line);
                else expr = new AttributeExpr(expr, ExpectName(), line);
            }
            else if (SkipOperator("[")) expr = ParseSubscript(expr, line);
            else if (IsOperator("(")) expr = new CallExpr(expr, ParseArguments(), line);
            else return expr;
        }
    }

    Expr ParseSubscript(Expr target, int line)
    {
        Expr? start = null, stop = null, step = null;
        if (SkipOperator("]")) return new ItemExpr(target, new ListExpr([], line, IsTuple: true), line); // x[]: the empty tuple
        if (!IsOperator(":")) start = ParseExpression();
        if (start is not null && IsOperator(",")) // x[a, b]: the key is a tuple
        {
            var items = new List<Expr> { start };
            while (SkipOperator(",") && !IsOperator("]")) items.Add(ParseExpression());
            ExpectOperator("]");
            return new ItemExpr(target, new ListExpr(items, line, IsTuple: true), line);
        }
        if (!SkipOperator(":"))
        {
            ExpectOperator("]");
            return new ItemExpr(target, start!, line);
        }
        if (!IsOperator(":") && !IsOperator("]")) stop = ParseExpression();
        if (SkipOperator(":") && !IsOperator("]")) step = ParseExpression();
        ExpectOperator("]");
        return new SliceExpr(target, start, stop, step, line);
    }

    // (a, b, *more, key=c, **named): positional before named, *x before named, **x last.
    Arguments ParseArguments()
    {
        ExpectOperator("(");
        var positional = new List<Expr>();
        var named = new List<(string, Expr)>();
        Expr? star = null, doubleStar = null;
        for (bool first = true; !SkipOperator(")"); first = false)
        {
            if (!first)
            {
                ExpectOperator(",");
                if (SkipOperator(")")) break;
            }
            if (doubleStar is not null) throw Error("nothing may follow **arguments");
            if (SkipOperator("**")) doubleStar = ParseExpression();
            else if (SkipOperator("*"))
            {
                if (star is not null || named.Count > 0) throw Error("*arguments must come once, before named ones");
                star = ParseExpression();
            }
            else if (Current.Kind == TokenKind.Name && _tokens[_pos + 1] is { Kind: TokenKind.Operator, Value: "=" })
            {
                string name = Next().Value;
                _pos++;
                named.Add((name, ParseExpression()));
            }
            else
            {
                if (named.Count > 0 || star is not null) throw Error("a positional argument cannot follow a named one or *arguments");
                positional.Add(ParseExpression());
            }
        }
        return new Arguments(positional, named, star, doubleStar);
    }

    NameExpr Mention(NameExpr name)
    {
        foreach (var names in _macroNames) names.Add(name.Name);
        return name;
    }

    FilterCall ParseFilterCall()
    {
        int line = Current.Line;
        string name = ExpectName();
        while (SkipOperator(".")) name += "." + ExpectName();
        CheckKnown(name, filter: true, line);
        var args = IsOperator("(") ? ParseArguments() : new Arguments([], []);
        return new FilterCall(name, args, line);
    }

    // name(args) | name | …: the filters of a {% filter %} or {% set x | … %} block.
    List<FilterCall> ParseFilterChain()
    {
        var filters = new List<FilterCall> { ParseFilterCall() };
        while (SkipOperator("|")) filters.Add(ParseFilterCall());
        return filters;
    }

    Expr ParseFilters(Expr expr)
    {
        while (true)
        {
            int line = Current.Line;
            if (SkipOperator("|"))
            {
                var filter = ParseFilterCall();
                expr = new FilterExpr(expr, filter.Name, filter.Args, line);
            }
            else if (SkipName("is"))
            {
                bool negated = SkipName("not");
                string name = ExpectName();
                CheckKnown(name, filter: false, line);
                Arguments args;
                if (IsOperator("(")) args = ParseArguments();
                // "x is divisibleby 3", "x is sameas none", "x is in [1, 2]": one argument without brackets. As in
                // Jinja, any name but and / or / else starts one ("x is defined if c" is an error), and "is" is.
                else if ((Current.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float || IsOperator("[") || IsOperator("{"))
                         && !(Current.Kind == TokenKind.Name && Current.Value is "and" or "or" or "else"))
                {
                    if (IsName("is")) throw Error("tests cannot be chained with 'is'");
                    args = new Arguments([ParsePostfix(ParsePrimary())], []);
                }
                else args = new Arguments([], []);
                expr = new TestExpr(expr, name, args, negated, line);
            }
            else if (IsOperator("(")) expr = new CallExpr(expr, ParseArguments(), line);
            else return expr;
        }
    }
}
