#!/usr/bin/env bash
# Download COCO 2014 (train2014, val2014, the 2014 annotations) into the layout the project reads:
#   <coco_root>/images/train2014/  <coco_root>/images/val2014/  <coco_root>/annotations/
#
# Usage: dataset/step1_download_coco2014.sh [--coco_root DIR] [--parts train2014,val2014,annotations]
#                                           [--skip_space_check true|false]
# Environment: COCO_BASE_URL (default http://images.cocodataset.org) to use a mirror;
#              COCO_DOWNLOAD_ATTEMPTS (default 3) resumed attempts per archive in one run.
#
# Resumable: archives download to <name>.zip.part and continue where they stopped (HTTP Range).
# Idempotent: a part is finished when <coco_root>/.download/<part>.done exists; finished parts
# are skipped. Each archive is verified (unzip -t) before extraction and deleted only after a
# successful extraction. The disk space still needed is printed and compared with the free
# space before anything is downloaded.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COCO_ROOT="$SCRIPT_DIR/COCO"
BASE_URL="${COCO_BASE_URL:-http://images.cocodataset.org}"
BASE_URL="${BASE_URL%/}"
ATTEMPTS="${COCO_DOWNLOAD_ATTEMPTS:-3}"
PARTS="train2014,val2014,annotations"
SKIP_SPACE_CHECK=false

die() { echo "error: $*" >&2; exit "${2:-1}"; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

bool() {
    case "${1,,}" in
        1|true|t|yes|y|on) echo true ;;
        0|false|f|no|n|off) echo false ;;
        *) die "expected a boolean (true/false/1/0), got '$1'" 2 ;;
    esac
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --coco_root) [[ $# -ge 2 ]] || die "--coco_root needs a value" 2; COCO_ROOT=$2; shift 2 ;;
        --coco_root=*) COCO_ROOT=${1#*=}; shift ;;
        --parts) [[ $# -ge 2 ]] || die "--parts needs a value" 2; PARTS=$2; shift 2 ;;
        --parts=*) PARTS=${1#*=}; shift ;;
        --skip_space_check) [[ $# -ge 2 ]] || die "--skip_space_check needs a value" 2
                            SKIP_SPACE_CHECK=$(bool "$2"); shift 2 ;;
        --skip_space_check=*) SKIP_SPACE_CHECK=$(bool "${1#*=}"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" 2 ;;
    esac
done
[[ "$ATTEMPTS" =~ ^[1-9][0-9]*$ ]] || die "COCO_DOWNLOAD_ATTEMPTS must be a positive integer" 2

for tool in curl unzip df; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed (needed to download and unpack)"
done
# part -> archive path on the server; approximate sizes (bytes) when the server sends none;
# how much larger the unpacked files are than the archive (JPEGs do not compress; JSON does).
declare -A URL_PATH=([train2014]=zips/train2014.zip [val2014]=zips/val2014.zip
                     [annotations]=annotations/annotations_trainval2014.zip)
declare -A APPROX_SIZE=([train2014]=13510573713 [val2014]=6645013297 [annotations]=252907541)
declare -A UNPACK_FACTOR=([train2014]=1 [val2014]=1 [annotations]=4)

IFS=, read -r -a SELECTED <<<"$PARTS"
for part in "${SELECTED[@]}"; do
    [[ -n "${URL_PATH[$part]+x}" ]] || die "unknown part '$part' (choose from train2014, val2014, annotations)" 2
done

mkdir -p "$COCO_ROOT" 2>/dev/null || die "cannot create $COCO_ROOT"
[[ -w "$COCO_ROOT" ]] || die "$COCO_ROOT is not writable"
COCO_ROOT=$(cd "$COCO_ROOT" && pwd)
STATE="$COCO_ROOT/.download"
mkdir -p "$STATE" "$COCO_ROOT/images" "$COCO_ROOT/annotations"

human() { awk -v b="$1" 'BEGIN { split("B KB MB GB TB", u); i = 1;
                                 while (b >= 1000 && i < 5) { b /= 1000; i++ }
                                 printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i] }'; }

# Size of the archive on the server (Content-Length of a HEAD request), or fail clearly when
# the server cannot be reached.
remote_size() {
    local url=$1 headers rc size
    headers=$(curl -sS -I -L --fail --connect-timeout 15 --max-time 60 "$url" 2>&1) && rc=0 || rc=$?
    case $rc in
        0) ;;
        6|7|28|35|52|56)
            die "cannot reach the COCO server for $url (curl error $rc: ${headers##*curl: }). Check the network, or set COCO_BASE_URL to a reachable mirror." 3 ;;
        22) die "the server refused $url (${headers##*curl: }): is COCO_BASE_URL right?" 3 ;;
        *) die "request for $url failed (curl error $rc: ${headers##*curl: })" 3 ;;
    esac
    # the last Content-Length (after redirects); digits only, so bash arithmetic can use it
    size=$(echo "$headers" | tr -d '\r' | awk 'tolower($1) == "content-length:" { n = $2 } END { print n }')
    [[ "$size" =~ ^[0-9]+$ ]] && echo "$size" || echo 0
}

# Plan: what is left to do and how much space it needs.
declare -A SIZE
PENDING=()
NEEDED=0
for part in "${SELECTED[@]}"; do
    if [[ -f "$STATE/$part.done" ]]; then
        log "$part: already downloaded and unpacked, skipped"
        continue
    fi
    url="$BASE_URL/${URL_PATH[$part]}"
    size=$(remote_size "$url")
    if [[ "$size" -le 0 ]]; then
        size=${APPROX_SIZE[$part]}
        log "$part: the server sent no size; assuming about $(human "$size")"
    fi
    SIZE[$part]=$size
    archive="$COCO_ROOT/$(basename "${URL_PATH[$part]}")"
    have=0
    [[ -f "$archive" ]] && have=$(stat -c %s "$archive")
    [[ -f "$archive.part" ]] && have=$(stat -c %s "$archive.part")
    (( have > size )) && have=0
    NEEDED=$(( NEEDED + size - have + size * ${UNPACK_FACTOR[$part]} ))
    PENDING+=("$part")
done

if [[ ${#PENDING[@]} -eq 0 ]]; then
    log "nothing to do: ${SELECTED[*]} complete in $COCO_ROOT"
    exit 0
fi

FREE=$(( $(df -Pk "$COCO_ROOT" | awk 'NR == 2 { print $4 }') * 1024 ))
log "to do: ${PENDING[*]}; disk space needed: about $(human "$NEEDED") (downloads still to fetch + unpacked files), free in $COCO_ROOT: $(human "$FREE")"
if (( NEEDED > FREE )); then
    if [[ "$SKIP_SPACE_CHECK" == true ]]; then
        log "warning: not enough free space, going on as asked (--skip_space_check true)"
    else
        die "not enough free space in $COCO_ROOT: need about $(human "$NEEDED"), have $(human "$FREE") (free some space, pick another --coco_root, or pass --skip_space_check true)" 4
    fi
fi

download() {
    local part=$1 url=$2 archive=$3 size=$4 attempt rc=0 have
    if [[ -f "$archive" ]]; then
        log "$part: archive already downloaded: $archive"
        return 0
    fi
    for (( attempt = 1; attempt <= ATTEMPTS; attempt++ )); do
        have=0
        [[ -f "$archive.part" ]] && have=$(stat -c %s "$archive.part")
        if (( have > size )); then
            log "$part: partial file larger than the archive, starting over"
            rm -f "$archive.part"; have=0
        fi
        (( have == size && size > 0 )) && { rc=0; break; }
        (( have > 0 )) && log "$part: resuming at $(human "$have") of $(human "$size")" \
                      || log "$part: downloading $(human "$size") from $url"
        rc=0
        curl --fail --location --continue-at - --connect-timeout 15 --retry 2 \
             --progress-bar -o "$archive.part" "$url" || rc=$?
        [[ $rc -eq 0 ]] && break
        [[ $rc -eq 6 || $rc -eq 7 ]] && die "cannot reach the COCO server for $url (curl error $rc). Check the network, or set COCO_BASE_URL; rerun to resume." 3
        log "$part: download interrupted (curl error $rc), attempt $attempt of $ATTEMPTS"
    done
    if [[ $rc -ne 0 ]]; then
        die "$part: download did not finish ($(human "$(stat -c %s "$archive.part" 2>/dev/null || echo 0)") of $(human "$size") kept in $archive.part); rerun to resume" 5
    fi
    mv -f "$archive.part" "$archive"
}

unpack() {
    local part=$1 archive=$2 staging="$COCO_ROOT/.unpack_$1" src dst
    log "$part: verifying $archive"
    if ! unzip -tq "$archive" >/dev/null 2>&1; then
        rm -f "$archive"
        die "$part: archive $archive is corrupt (unzip -t failed); it was removed, rerun to download it again" 6
    fi
    log "$part: unpacking"
    rm -rf "$staging"
    unzip -q -o "$archive" -d "$staging" || die "$part: unpacking $archive failed (disk full?); the archive is kept, rerun to retry" 6
    if [[ "$part" == annotations ]]; then
        src="$staging/annotations"; dst="$COCO_ROOT/annotations"
    else
        src="$staging/$part"; dst="$COCO_ROOT/images/$part"
    fi
    [[ -d "$src" ]] || die "$part: $archive does not contain the folder $(basename "$src")/" 6
    if [[ ! -e "$dst" ]] || [[ -z "$(ls -A "$dst")" ]]; then
        rm -rf "$dst"
        mv "$src" "$dst"
    else
        # an earlier, interrupted unpack may have left files: the archive's copies win
        find "$src" -mindepth 1 -maxdepth 1 -exec mv -f -t "$dst" {} +
    fi
    rm -rf "$staging"
    rm -f "$archive"
    date -u +%Y-%m-%dT%H:%M:%SZ >"$STATE/$part.done"
    log "$part: done -> $dst"
}

for part in "${PENDING[@]}"; do
    url="$BASE_URL/${URL_PATH[$part]}"
    archive="$COCO_ROOT/$(basename "${URL_PATH[$part]}")"
    download "$part" "$url" "$archive" "${SIZE[$part]}"
    unpack "$part" "$archive"
done
log "COCO 2014 ready in $COCO_ROOT (images/, annotations/). Next: dataset/step2_setup_coco_api.sh, training/generate_masks_coco2014.py"
