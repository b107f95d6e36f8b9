#!/usr/bin/env bash
# Two metro binaries, the same answers: every command's output compared byte for byte.
#
#   scripts/same-output.sh OLD_METRO NEW_METRO [CORPUS_DIR]   (default: ../shared/corpus)
#
# For a refactoring that must not change behaviour: runs `metro analyze` (table, JSON with
# --flows, --samples, the summary on standard error, --threads 1 and 2), `metro analyze
# --plot/--report` and `metro plot` over every capture of the corpus and a few captures made
# by `metro generate` (with OLD_METRO, so both read the same bytes), with each binary, and
# prints every file whose output differs. File names in the output are the same for both
# (each binary reads the same path). Exit status 0 when everything matched, 1 otherwise.
#
# Plots need the font (Debian package fonts-dejavu-core); without it those runs fail the same
# way for both and compare equal.
set -uo pipefail

old=$1
new=$2
root=$(cd "$(dirname "$0")/.." && pwd)
corpus=${3:-$root/../shared/corpus}
work=$(mktemp -d /tmp/metro-same-XXXXXX)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/gen"
"$old" generate --seed 1 -n 200000 -c 2000 -o "$work/gen/a.pcap"
"$old" generate --seed 2 -n 50000 -c 20000 -o "$work/gen/b.pcap"
"$old" generate --seed 3 -n 100000 -c 300 --servers 3 -o "$work/gen/c.pcap"

files=()
while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$corpus" -type f ! -name '*.md' ! -name '*.tsv' -print0 | sort -z)
files+=("$work/gen/a.pcap" "$work/gen/b.pcap" "$work/gen/c.pcap")

# run NAME BINARY ARGS...: standard output, standard error and the exit code, in $work/NAME.
run() {
    local name=$1 bin=$2
    shift 2
    (cd "$work" && "$bin" "$@" >"$name.out" 2>"$name.err"; echo $? >"$name.rc")
}

checked=0
differ=0
compare() {
    local tag=$1
    shift
    for f in "$@"; do
        [[ -e $work/old.$f || -e $work/new.$f ]] || continue
        checked=$((checked + 1))
        if ! cmp -s "$work/old.$f" "$work/new.$f"; then
            differ=$((differ + 1))
            echo "DIFFERS: $tag: $f"
            diff <(head -c 4000 "$work/old.$f") <(head -c 4000 "$work/new.$f") | head -10
        fi
    done
}

for f in "${files[@]}"; do
    for t in 1 2; do
        for side in old new; do
            bin=$old
            [[ $side == new ]] && bin=$new
            run "$side.table" "$bin" analyze --threads "$t" "$f"
            run "$side.json" "$bin" analyze --threads "$t" --flows --format json "$f"
            run "$side.samples" "$bin" analyze --threads "$t" -q --samples - "$f"
            # The same picture paths for both (they appear in messages), moved aside after.
            run "$side.plots" "$bin" analyze --threads "$t" --plot "$work/pic.svg" --report "$work/page.html" "$f"
            [[ -e $work/pic.svg ]] && mv "$work/pic.svg" "$work/$side.svg"
            [[ -e $work/page.html ]] && mv "$work/page.html" "$work/$side.html"
        done
        compare "analyze --threads $t $f" table.out table.err table.rc json.out json.err json.rc \
            samples.out samples.err samples.rc plots.out plots.err plots.rc svg html
        rm -f "$work"/old.svg "$work"/new.svg "$work"/old.html "$work"/new.html
    done
    for side in old new; do
        bin=$old
        [[ $side == new ]] && bin=$new
        run "$side.plot" "$bin" plot -o "$work/pic.png" "$f"
        [[ -e $work/pic.png ]] && mv "$work/pic.png" "$work/$side.png"
    done
    compare "plot $f" plot.out plot.err plot.rc png
    rm -f "$work"/old.png "$work"/new.png
done

echo "$((${#files[@]})) captures, $checked outputs compared, $differ differ"
[[ $differ -eq 0 ]]
