# bash completion for defectnet: subcommands, and each subcommand's options as its
# own --help lists them (so the completion never drifts from the program).
_defectnet() {
    local cur prev cmd opts
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        opts=$(defectnet --help 2>/dev/null | sed -n 's/^  \([a-z_]*\)  .*/\1/p')
        COMPREPLY=($(compgen -W "$opts help --help --version" -- "$cur"))
        return
    fi
    cmd=${COMP_WORDS[1]}
    if [ "$cmd" = help ]; then
        opts=$(defectnet --help 2>/dev/null | sed -n 's/^  \([a-z_]*\)  .*/\1/p')
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$prev" in
        -f|--format) COMPREPLY=($(compgen -W "table json jsonl csv html" -- "$cur")); return ;;
        -g|--group-by) COMPREPLY=($(compgen -W "line station camera shift day model_version decision class" -- "$cur")); return ;;
        --mode) COMPREPLY=($(compgen -W "bf16 winograd bf16+winograd int8" -- "$cur")); return ;;
        --layer) COMPREPLY=($(compgen -W "layer1 layer2 layer3 layer4" -- "$cur")); return ;;
        --score) COMPREPLY=($(compgen -W "combo knn energy rmd" -- "$cur")); return ;;
        --split) COMPREPLY=($(compgen -W "test val train all" -- "$cur")); return ;;
        --review) COMPREPLY=($(compgen -W "unknown uncertain accepted class: sample: cap: agree:" -- "$cur")); return ;;
        --tz) COMPREPLY=($(cd /usr/share/zoneinfo 2>/dev/null && compgen -f -- "$cur")); return ;;
    esac
    if [[ "$cur" == -* ]]; then
        opts=$(defectnet "$cmd" --help 2>/dev/null | grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o filenames -F _defectnet defectnet
