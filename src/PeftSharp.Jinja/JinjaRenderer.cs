using System.Text;
using static PeftSharp.Jinja.JinjaValues;

namespace PeftSharp.Jinja;

/// <summary>
/// Runs a parsed template. Scoping follows Jinja2: a for loop's body is a new scope each iteration (a
/// <c>set</c> inside it is gone after the loop, which is why templates use <c>namespace()</c>), <c>if</c>
/// opens no scope, a macro's body sees the scope it was defined in.
/// </summary>
internal sealed class JinjaRenderer
{
    enum Flow { Normal, Break, Continue }

    sealed class Scope(Scope? parent)
    {
        public readonly Dictionary<string, object?> Variables = new(StringComparer.Ordinal);
        public Scope? Parent { get; } = parent;

        public bool TryGet(string name, out object? value)
        {
            for (var s = this; s is not null; s = s.Parent)
                if (s.Variables.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }
    }

    /// <summary>
    /// The attributes of <c>loop</c> inside a for loop. One object per loop whose index moves on, as in Jinja2
    /// (so <c>{% set outer = loop %}</c> follows the outer loop, and <c>loop.changed</c> remembers its last value).
    /// </summary>
    internal sealed class LoopContext(List<object?> items)
    {
        /// <summary>The current iteration, from 0.</summary>
        public int Index;
        JinjaTuple? lastChanged;

        public object? Get(string name) => name switch
        {
            "index" => (long)Index + 1,
            "index0" => (long)Index,
            "revindex" => (long)(items.Count - Index),
            "revindex0" => (long)(items.Count - Index - 1),
            "first" => Index == 0,
            "last" => Index == items.Count - 1,
            "length" => (long)items.Count,
            "previtem" => Index > 0 ? items[Index - 1] : new Undefined("there is no previous item"),
            "nextitem" => Index + 1 < items.Count ? items[Index + 1] : new Undefined("there is no next item"),
            "depth" => 1L,
            "depth0" => 0L,
            "cycle" => new JinjaFunction("loop.cycle", (args, _) =>
                args.Count == 0 ? throw new JinjaException("loop.cycle() needs at least one value", 0) : args[Index % args.Count]),
            "changed" => new JinjaFunction("loop.changed", (args, _) =>
            {
                var value = new JinjaTuple(args);
                if (lastChanged is not null && AreEqual(lastChanged, value)) return false;
                lastChanged = value;
                return true;
            }),
            _ => new Undefined($"the loop has no attribute '{name}'"),
        };
    }

    readonly StringBuilder _root = new();
    readonly List<(int Start, int End)> _generationSpans = [];
    readonly IReadOnlyDictionary<IReadOnlyList<Node>, HashSet<string>> _unsetAtStart;

    JinjaRenderer(IReadOnlyDictionary<IReadOnlyList<Node>, HashSet<string>> unsetAtStart) => _unsetAtStart = unsetAtStart;

    /// <param name="unsetAtStart">The names each frame starts without, from <see cref="JinjaScopes.UnsetAtStart"/>.</param>
    public static (string Text, IReadOnlyList<(int Start, int End)> GenerationSpans) Render(IReadOnlyList<Node> body,
        IReadOnlyDictionary<IReadOnlyList<Node>, HashSet<string>> unsetAtStart, IReadOnlyDictionary<string, object?> variables)
    {
        var renderer = new JinjaRenderer(unsetAtStart);
        var globals = new Scope(null);
        foreach (var (name, value) in JinjaBuiltins.Globals) globals.Variables[name] = value;
        foreach (var (name, value) in variables) globals.Variables[name] = value;
        var top = renderer.Frame(globals, body);
        if (renderer.RenderNodes(body, renderer._root, top) != Flow.Normal)
            throw new JinjaException("'break' or 'continue' outside a for loop", 0);
        return (renderer._root.ToString(), renderer._generationSpans);
    }

    // A new scope for a frame (the template, a loop body, a macro, a block), holding the names the frame owns
    // from its start as undefined (see JinjaScopes), so that they hide the same names outside.
    Scope Frame(Scope parent, IReadOnlyList<Node> body)
    {
        var scope = new Scope(parent);
        if (_unsetAtStart.TryGetValue(body, out var names))
            foreach (var name in names) scope.Variables[name] = new Undefined($"'{name}' is undefined");
        return scope;
    }

    Flow RenderNodes(IReadOnlyList<Node> nodes, StringBuilder output, Scope scope)
    {
        foreach (var node in nodes)
        {
            var flow = RenderNode(node, output, scope);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    Flow RenderNode(Node node, StringBuilder output, Scope scope)
    {
        switch (node)
        {
            case TextNode text:
                output.Append(text.Text);
                return Flow.Normal;
            case OutputNode o:
                output.Append(ToStr(Evaluate(o.Value, scope)));
                return Flow.Normal;
            case IfNode ifNode:
                foreach (var (condition, body) in ifNode.Branches)
                    if (IsTrue(Evaluate(condition, scope))) return RenderNodes(body, output, scope);
                return RenderNodes(ifNode.Else, output, scope);
            case ForNode forNode:
                return RenderFor(forNode, output, scope);
            case WithNode with:
            {
                var values = with.Assignments.Select(a => Evaluate(a.Value, scope)).ToList();
                var inner = Frame(scope, with.Body);
                for (int i = 0; i < values.Count; i++) inner.Variables[with.Assignments[i].Name] = values[i];
                return RenderNodes(with.Body, output, inner);
            }
            case SetNode set:
                Assign(set.Names, set.Attribute, Evaluate(set.Value, scope), scope, set.Line);
                return Flow.Normal;
            // A set or filter block's body renders on the side. A break or continue in it (in a loop) leaves the
            // block at once, as Jinja's Python code does: nothing is assigned or written.
            case SetBlockNode setBlock:
            {
                var captured = new StringBuilder();
                var flow = RenderNodes(setBlock.Body, captured, Frame(scope, setBlock.Body)); // the block's own sets stay inside it
                if (flow != Flow.Normal) return flow;
                Assign([setBlock.Name], setBlock.Attribute, ApplyFilters(setBlock.Filters, captured.ToString(), scope), scope, setBlock.Line);
                return Flow.Normal;
            }
            case MacroNode macro:
                scope.Variables[macro.Name] = MakeMacro(macro, scope);
                return Flow.Normal;
            case FilterBlockNode filterBlock:
            {
                var captured = new StringBuilder();
                var flow = RenderNodes(filterBlock.Body, captured, Frame(scope, filterBlock.Body));
                if (flow != Flow.Normal) return flow;
                output.Append(ToStr(ApplyFilters(filterBlock.Filters, captured.ToString(), scope)));
                return Flow.Normal;
            }
            case GenerationNode generation:
            {
                // transformers renders the body as a call block's caller: a macro, so its sets stay inside it.
                int start = output.Length;
                var flow = RenderNodes(generation.Body, output, Frame(scope, generation.Body));
                if (ReferenceEquals(output, _root) && output.Length > start) _generationSpans.Add((start, output.Length));
                return flow;
            }
            case BreakNode:
                return Flow.Break;
            case ContinueNode:
                return Flow.Continue;
            default:
                throw new JinjaException($"cannot render a {node.GetType().Name}", node.Line);
        }
    }

    // The loop's own break and continue end here; one in the else block belongs to an enclosing loop.
    Flow RenderFor(ForNode node, StringBuilder output, Scope scope)
    {
        var items = Iterate(Evaluate(node.Iterable, scope), node.Line);
        if (node.Condition is not null)
        {
            var kept = new List<object?>();
            foreach (var item in items)
            {
                var test = new Scope(scope);
                Bind(node.Targets, item, test, node.Line);
                if (IsTrue(Evaluate(node.Condition, test))) kept.Add(item);
            }
            items = kept;
        }
        else items = [.. items]; // a snapshot: the body cannot change what is iterated
        // Jinja runs the else block unless some iteration reached the end of the body: with no items, and also
        // when every iteration ended in break or continue (its code marks an iteration done at the body's end).
        bool completed = false;
        var loop = new LoopContext(items);
        for (int i = 0; i < items.Count; i++)
        {
            var iteration = Frame(scope, node.Body);
            Bind(node.Targets, items[i], iteration, node.Line);
            loop.Index = i;
            iteration.Variables["loop"] = loop;
            var flow = RenderNodes(node.Body, output, iteration);
            completed |= flow == Flow.Normal;
            if (flow == Flow.Break) break;
        }
        return completed ? Flow.Normal : RenderNodes(node.Else, output, Frame(scope, node.Else));
    }

    static void Bind(IReadOnlyList<string> targets, object? value, Scope scope, int line)
    {
        if (targets.Count == 1)
        {
            scope.Variables[targets[0]] = value;
            return;
        }
        var parts = Iterate(value, line);
        if (parts.Count != targets.Count)
            throw new JinjaException($"cannot unpack {parts.Count} values into {targets.Count} names ({string.Join(", ", targets)})", line);
        for (int i = 0; i < targets.Count; i++) scope.Variables[targets[i]] = parts[i];
    }

    static void Assign(IReadOnlyList<string> names, string? attribute, object? value, Scope scope, int line)
    {
        if (attribute is not null)
        {
            if (!scope.TryGet(names[0], out var target) || target is not JinjaNamespace ns)
                throw new JinjaException($"'{names[0]}' is not a namespace: only namespace() objects take {{% set {names[0]}.{attribute} = … %}}", line);
            ns.Attributes[attribute] = value;
            return;
        }
        Bind(names, value, scope, line);
    }

    // Jinja2's macro call (its Macro.__call__): positional arguments fill the first parameters, keywords the
    // others, defaults (which may use the parameters before them) the rest. What is left over goes to kwargs /
    // varargs if the body uses them, else is an error, keywords first; a keyword naming a parameter already
    // given by position is left over too, not a clash.
    JinjaFunction MakeMacro(MacroNode macro, Scope definedIn) => new(macro.Name, (args, kwargs) =>
    {
        var scope = Frame(definedIn, macro.Body);
        int count = macro.Parameters.Count;
        var extraKwargs = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in kwargs) extraKwargs[name] = value;
        var given = new bool[count];
        for (int i = 0; i < count; i++)
        {
            string name = macro.Parameters[i];
            if (i < args.Count) (scope.Variables[name], given[i]) = (args[i], true);
            else if (extraKwargs.Remove(name, out var value)) (scope.Variables[name], given[i]) = (value, true);
        }
        if (extraKwargs.Count > 0 && !macro.TakesKwargs)
            throw new JinjaException($"macro '{macro.Name}' takes no keyword argument '{extraKwargs.GetAt(0).Key}'", macro.Line);
        if (args.Count > count && !macro.TakesVarargs)
            throw new JinjaException($"macro '{macro.Name}' takes not more than {count} argument(s)", macro.Line);
        if (macro.TakesKwargs) scope.Variables["kwargs"] = extraKwargs;
        if (macro.TakesVarargs) scope.Variables["varargs"] = new JinjaTuple(args.Skip(count));
        for (int i = 0; i < count; i++)
            if (!given[i])
                scope.Variables[macro.Parameters[i]] = macro.Defaults[i] is { } d ? Evaluate(d, scope) : new Undefined($"'{macro.Parameters[i]}' is undefined");
        var output = new StringBuilder();
        RenderNodes(macro.Body, output, scope);
        return output.ToString();
    });

    object? ApplyFilters(IReadOnlyList<FilterCall> filters, object? value, Scope scope)
    {
        foreach (var filter in filters)
        {
            var (args, kwargs) = EvaluateArguments(filter.Args, scope);
            value = JinjaFilters.Filter(filter.Name, value, args, kwargs, filter.Line);
        }
        return value;
    }

    // The values of a call's arguments, *more added to the positional ones and **named to the keywords (in order).
    (List<object?> Args, OrderedDictionary<string, object?> Kwargs) EvaluateArguments(Arguments arguments, Scope scope)
    {
        var args = arguments.Positional.Select(a => Evaluate(a, scope)).ToList();
        var kwargs = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in arguments.Named) kwargs[name] = Evaluate(value, scope);
        if (arguments.Star is { } star) args.AddRange(Iterate(Evaluate(star, scope), star.Line));
        if (arguments.DoubleStar is { } doubleStar)
        {
            if (Evaluate(doubleStar, scope) is not OrderedDictionary<string, object?> more)
                throw new JinjaException("**arguments must be a dict", doubleStar.Line);
            foreach (var (name, value) in more) kwargs[name] = value;
        }
        return (args, kwargs);
    }

    object? Evaluate(Expr expr, Scope scope)
    {
        switch (expr)
        {
            case LiteralExpr literal:
                return literal.Value;
            case NameExpr name:
                return scope.TryGet(name.Name, out var value) ? value : new Undefined($"'{name.Name}' is undefined");
            case AttributeExpr attribute:
                return JinjaBuiltins.GetAttribute(Evaluate(attribute.Target, scope), attribute.Name, attribute.Line);
            case ItemExpr item:
                return JinjaBuiltins.GetItem(Evaluate(item.Target, scope), Evaluate(item.Key, scope), item.Line);
            case SliceExpr slice:
                return JinjaBuiltins.Slice(Evaluate(slice.Target, scope), Optional(slice.Start), Optional(slice.Stop), Optional(slice.Step), slice.Line);
            case CallExpr call:
            {
                var callee = Evaluate(call.Callee, scope);
                var (args, kwargs) = EvaluateArguments(call.Args, scope);
                return callee switch
                {
                    JinjaFunction f => f.Invoke(args, kwargs),
                    Undefined u => throw new JinjaException(u.Hint, call.Line),
                    _ => throw new JinjaException($"a {TypeName(callee)} cannot be called", call.Line),
                };
            }
            case FilterExpr filter:
            {
                var input = Evaluate(filter.Input, scope);
                var (args, kwargs) = EvaluateArguments(filter.Args, scope);
                return JinjaFilters.Filter(filter.Name, input, args, kwargs, filter.Line);
            }
            case TestExpr test:
            {
                var input = Evaluate(test.Input, scope);
                var (args, _) = EvaluateArguments(test.Args, scope);
                return JinjaFilters.Test(test.Name, input, args, test.Line) != test.Negated;
            }
            case UnaryExpr unary:
            {
                var operand = Evaluate(unary.Operand, scope);
                return unary.Op switch
                {
                    "not" => !IsTrue(operand),
                    "-" => operand switch
                    {
                        long l => l != long.MinValue ? (object)(-l) : throw new JinjaException("integer overflow in unary -", unary.Line),
                        double d => -d,
                        bool b => b ? -1L : 0L,
                        _ => throw new JinjaException($"bad operand type for unary -: '{TypeName(operand)}'", unary.Line),
                    },
                    _ => IsNumber(operand) ? operand is bool b2 ? (b2 ? 1L : 0L) : operand
                        : throw new JinjaException($"bad operand type for unary +: '{TypeName(operand)}'", unary.Line),
                };
            }
            case BinaryExpr binary:
                if (binary.Op == "and")
                {
                    var left = Evaluate(binary.Left, scope);
                    return IsTrue(left) ? Evaluate(binary.Right, scope) : left;
                }
                if (binary.Op == "or")
                {
                    var left = Evaluate(binary.Left, scope);
                    return IsTrue(left) ? left : Evaluate(binary.Right, scope);
                }
                return JinjaBuiltins.Arithmetic(binary.Op, Evaluate(binary.Left, scope), Evaluate(binary.Right, scope), binary.Line);
            case CompareExpr compare:
            {
                var left = Evaluate(compare.First, scope);
                foreach (var (op, rightExpr) in compare.Rest)
                {
                    var right = Evaluate(rightExpr, scope);
                    bool holds = op switch
                    {
                        "==" => AreEqual(left, right),
                        "!=" => !AreEqual(left, right),
                        "<" => Compare(left, right, compare.Line) < 0,
                        "<=" => Compare(left, right, compare.Line) <= 0,
                        ">" => Compare(left, right, compare.Line) > 0,
                        ">=" => Compare(left, right, compare.Line) >= 0,
                        "in" => JinjaBuiltins.Contains(right, left, compare.Line),
                        _ => !JinjaBuiltins.Contains(right, left, compare.Line),
                    };
                    if (!holds) return false;
                    left = right;
                }
                return true;
            }
            case ConditionalExpr conditional:
                return IsTrue(Evaluate(conditional.Condition, scope)) ? Evaluate(conditional.Then, scope)
                    : conditional.Else is null ? new Undefined("the conditional expression had no else branch") : Evaluate(conditional.Else, scope);
            case ListExpr list:
                return list.IsTuple ? new JinjaTuple(list.Items.Select(i => Evaluate(i, scope))) : list.Items.Select(i => Evaluate(i, scope)).ToList();
            case DictExpr dict:
            {
                var result = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (keyExpr, valueExpr) in dict.Items)
                {
                    var key = Evaluate(keyExpr, scope);
                    result[key as string ?? ToStr(key)] = Evaluate(valueExpr, scope);
                }
                return result;
            }
            default:
                throw new JinjaException($"cannot evaluate a {expr.GetType().Name}", expr.Line);
        }

        object? Optional(Expr? e) => e is null ? null : Evaluate(e, scope);
    }
}
