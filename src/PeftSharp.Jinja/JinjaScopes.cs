namespace PeftSharp.Jinja;

/// <summary>
/// Which names each frame starts with as undefined. Jinja2 decides, when it compiles a template, which names a
/// frame (the template, a for body, a macro, a set / filter / with / generation block) owns: a name whose first
/// use in the frame is an unconditional <c>{% set %}</c>, and that no enclosing frame uses, belongs to the frame
/// from its start and is undefined until that set runs. So a loop that reads <c>n</c> before a later top-level
/// <c>{% set n = … %}</c> sees an undefined <c>n</c>, not the <c>n</c> passed to the template. A port of the part
/// of jinja2's idtracking.py that decides this; everything else about scoping falls out of nested scopes.
/// </summary>
internal static class JinjaScopes
{
    /// <summary>For each frame's body (by reference), the names that start undefined in it; frames with none are absent.</summary>
    public static IReadOnlyDictionary<IReadOnlyList<Node>, HashSet<string>> UnsetAtStart(IReadOnlyList<Node> template)
    {
        var result = new Dictionary<IReadOnlyList<Node>, HashSet<string>>(ReferenceEqualityComparer.Instance);
        AnalyzeFrame(template, null, new Symbols(null), result);
        return result;
    }

    // How a name gets its value when a frame starts (jinja2's VAR_LOAD_*): the parameter passed, the enclosing
    // frame's variable, the template's variables, or nothing (the only case that differs from a plain scope chain).
    enum Origin { Parameter, Outer, Resolve, Unset }

    sealed class Symbols(Symbols? parent)
    {
        public Dictionary<string, Origin> Refs = new(StringComparer.Ordinal);
        public HashSet<string> Stores = new(StringComparer.Ordinal);
        public Symbols? Parent { get; } = parent;

        public bool Knows(string name) => Refs.ContainsKey(name) || Parent?.Knows(name) == true;

        public void Load(string name)
        {
            if (!Knows(name)) Refs[name] = Origin.Resolve;
        }

        public void Store(string name)
        {
            Stores.Add(name);
            if (!Refs.ContainsKey(name)) Refs[name] = Parent?.Knows(name) == true ? Origin.Outer : Origin.Unset;
        }

        public void Parameter(string name)
        {
            Stores.Add(name);
            Refs[name] = Origin.Parameter;
        }

        public Symbols Copy() => new(Parent) { Refs = new(Refs, StringComparer.Ordinal), Stores = new(Stores, StringComparer.Ordinal) };

        // After an if: what the branches saw is known here too, but a name first set inside a branch may not be
        // set at all, so it is read from outside until it is.
        public void MergeBranches(IEnumerable<Symbols> branches)
        {
            var newStores = new HashSet<string>(StringComparer.Ordinal);
            foreach (var branch in branches)
            {
                newStores.UnionWith(branch.Stores.Except(Stores));
                foreach (var (name, origin) in branch.Refs) Refs[name] = origin;
            }
            Stores.UnionWith(newStores);
            foreach (var name in newStores) Refs[name] = Parent?.Knows(name) == true ? Origin.Outer : Origin.Resolve;
        }
    }

    // One frame: its own symbols first (header, then body), then the frames nested in it, whose parent it is.
    static void AnalyzeFrame(IReadOnlyList<Node> body, Action<Symbols>? header, Symbols symbols, Dictionary<IReadOnlyList<Node>, HashSet<string>> result)
    {
        header?.Invoke(symbols);
        var visitor = new FrameVisitor(symbols);
        foreach (var node in body) visitor.Visit(node);
        var unset = visitor.Symbols.Refs.Where(p => p.Value == Origin.Unset).Select(p => p.Key).ToHashSet(StringComparer.Ordinal);
        if (unset.Count > 0) result[body] = unset;
        foreach (var node in body) AnalyzeNestedFrames(node, visitor.Symbols, result);
    }

    static void AnalyzeNestedFrames(Node node, Symbols parent, Dictionary<IReadOnlyList<Node>, HashSet<string>> result)
    {
        switch (node)
        {
            case IfNode ifNode: // an if is no frame: look inside its branches
                foreach (var (_, body) in ifNode.Branches) foreach (var n in body) AnalyzeNestedFrames(n, parent, result);
                foreach (var n in ifNode.Else) AnalyzeNestedFrames(n, parent, result);
                break;
            case ForNode forNode:
                AnalyzeFrame(forNode.Body, s => { foreach (var t in forNode.Targets) s.Parameter(t); s.Parameter("loop"); }, new Symbols(parent), result);
                AnalyzeFrame(forNode.Else, null, new Symbols(parent), result);
                break;
            case MacroNode macro:
                AnalyzeFrame(macro.Body, s =>
                {
                    foreach (var p in macro.Parameters) s.Parameter(p);
                    if (macro.TakesVarargs) s.Parameter("varargs");
                    if (macro.TakesKwargs) s.Parameter("kwargs");
                    var defaults = new FrameVisitor(s);
                    foreach (var d in macro.Defaults) if (d is not null) defaults.Visit(d);
                }, new Symbols(parent), result);
                break;
            case WithNode with:
                AnalyzeFrame(with.Body, s => { foreach (var (name, _) in with.Assignments) s.Store(name); }, new Symbols(parent), result);
                break;
            case SetBlockNode setBlock:
                AnalyzeFrame(setBlock.Body, null, new Symbols(parent), result);
                break;
            case FilterBlockNode filterBlock:
                AnalyzeFrame(filterBlock.Body, null, new Symbols(parent), result);
                break;
            case GenerationNode generation:
                AnalyzeFrame(generation.Body, null, new Symbols(parent), result);
                break;
        }
    }

    // jinja2's FrameSymbolVisitor: the names a frame's own statements read and write, in order; nested frames'
    // bodies are not visited (only what their headers read here).
    sealed class FrameVisitor(Symbols symbols)
    {
        public Symbols Symbols { get; private set; } = symbols;

        public void Visit(Node node)
        {
            switch (node)
            {
                case OutputNode output: Visit(output.Value); break;
                case IfNode ifNode: VisitIf(ifNode.Branches, ifNode.Else); break;
                case ForNode forNode: Visit(forNode.Iterable); break;
                case WithNode with: foreach (var (_, value) in with.Assignments) Visit(value); break;
                case SetNode set:
                    Visit(set.Value);
                    if (set.Attribute is not null) Symbols.Load(set.Names[0]); // ns.attr = …: reads ns
                    else foreach (var name in set.Names) Symbols.Store(name);
                    break;
                case SetBlockNode setBlock:
                    if (setBlock.Attribute is not null) Symbols.Load(setBlock.Name);
                    else Symbols.Store(setBlock.Name);
                    break;
                case MacroNode macro: Symbols.Store(macro.Name); break;
                case FilterBlockNode filterBlock: foreach (var f in filterBlock.Filters) Visit(f.Args); break;
            }
        }

        // Jinja's if node: the first test and body, then the elif branches as one chain of nested ifs, then else.
        void VisitIf(IReadOnlyList<(Expr Condition, IReadOnlyList<Node> Body)> branches, IReadOnlyList<Node> elseBody)
        {
            Visit(branches[0].Condition);
            var original = Symbols;
            Symbols Branch(Action visit)
            {
                Symbols = original.Copy();
                visit();
                var branch = Symbols;
                Symbols = original;
                return branch;
            }
            var body = Branch(() => { foreach (var n in branches[0].Body) Visit(n); });
            var elifs = Branch(() => { for (int i = 1; i < branches.Count; i++) VisitIf([branches[i]], []); });
            var otherwise = Branch(() => { foreach (var n in elseBody) Visit(n); });
            Symbols.MergeBranches([body, elifs, otherwise]);
        }

        void Visit(Arguments args)
        {
            foreach (var a in args.Positional) Visit(a);
            foreach (var (_, value) in args.Named) Visit(value);
            Visit(args.Star);
            Visit(args.DoubleStar);
        }

        public void Visit(Expr? expr)
        {
            switch (expr)
            {
                case NameExpr name: Symbols.Load(name.Name); break;
                case AttributeExpr a: Visit(a.Target); break;
                case ItemExpr i: Visit(i.Target); Visit(i.Key); break;
                case SliceExpr s: Visit(s.Target); Visit(s.Start); Visit(s.Stop); Visit(s.Step); break;
                case CallExpr c: Visit(c.Callee); Visit(c.Args); break;
                case FilterExpr f: Visit(f.Input); Visit(f.Args); break;
                case TestExpr t: Visit(t.Input); Visit(t.Args); break;
                case UnaryExpr u: Visit(u.Operand); break;
                case BinaryExpr b: Visit(b.Left); Visit(b.Right); break;
                case CompareExpr c: Visit(c.First); foreach (var (_, right) in c.Rest) Visit(right); break;
                case ConditionalExpr c: Visit(c.Condition); Visit(c.Then); Visit(c.Else); break;
                case ListExpr l: foreach (var item in l.Items) Visit(item); break;
                case DictExpr d: foreach (var (k, v) in d.Items) { Visit(k); Visit(v); } break;
            }
        }
    }
}
