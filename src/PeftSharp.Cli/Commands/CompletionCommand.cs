using System.CommandLine;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp completion bash|zsh</c>: prints a shell script that completes peftsharp's commands and flags. The script
/// asks the tool itself for candidates through System.CommandLine's <c>[suggest:POSITION]</c> directive (the mechanism
/// <c>dotnet-suggest</c> uses), so completions always match the installed version; no global tool is needed.
/// </summary>
public static class CompletionCommand
{
    public static Command Create()
    {
        var shell = new Argument<string>("shell") { Description = "bash or zsh" };
        shell.AcceptOnlyFromAmong("bash", "zsh");
        var command = new Command("completion", "print a bash or zsh completion script (eval \"$(peftsharp completion bash)\")") { shell };
        command.SetAction(parse =>
        {
            Console.Out.Write(parse.GetValue(shell) == "zsh" ? Zsh : Bash);
            return 0;
        });
        return command;
    }

    // The line after the command word, and the cursor position within it, go to `peftsharp [suggest:N] "LINE"`.
    const string Bash = """
        # peftsharp completion for bash: eval "$(peftsharp completion bash)" (e.g. in ~/.bashrc)
        _peftsharp_complete() {
          local line="${COMP_LINE:0:COMP_POINT}"
          local command="${COMP_WORDS[0]}"
          line="${line#"$command"}"
          line="${line# }"
          local IFS=$'\n'
          local candidates
          candidates=$("$command" "[suggest:${#line}]" "$line" 2>/dev/null)
          COMPREPLY=( $(compgen -W "$candidates" -- "${COMP_WORDS[COMP_CWORD]}") )
        }
        complete -o default -F _peftsharp_complete peftsharp ./peftsharp

        """;

    const string Zsh = """
        # peftsharp completion for zsh: eval "$(peftsharp completion zsh)" (e.g. in ~/.zshrc, after compinit)
        _peftsharp_complete() {
          local line="${(j: :)words[2,CURRENT]}"
          local -a candidates
          candidates=(${(f)"$(${words[1]} "[suggest:${#line}]" "$line" 2>/dev/null)"})
          compadd -- $candidates
        }
        compdef _peftsharp_complete peftsharp ./peftsharp

        """;
}
