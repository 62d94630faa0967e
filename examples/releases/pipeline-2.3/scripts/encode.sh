#!/bin/sh
# encode.sh INPUT OUTPUT FPS CRF OVERWRITE START: the release's own wrapper around ffmpeg.
set -eu
input=$1 output=$2 fps=$3 crf=$4 overwrite=$5 start=$6
flag=-n
[ "$overwrite" = true ] && flag=-y
exec ffmpeg "$flag" -framerate "$fps" -start_number "$start" -i "$input" \
    -c:v libx264 -crf "$crf" -pix_fmt yuv420p "$output"
