#!/bin/sh
# The MPI sample's checks: 100 steps of AdamW (fp32 and 4-bit state on 1, 2 and 4 ranks, 8-bit on
# 1 and 4; 4-bit with rank-1 second moments on 1 and 4, matrices split), Lion (1 and 4) and Muon
# with AdamW (1, 3 and 4, matrices split) give the same parameters bit for bit; a checkpoint saved at step 50
# on 4 ranks (that run is the 4-rank run of 8-bit and 4-bit state), reloaded on 3 and 1 (8-bit)
# or 2 and 1 (4-bit), goes on to the same parameters as the uninterrupted run; global clipping
# (the ranks' chunk sums exchanged whole) gives the same bits on 1, 2 and 4 ranks too, and so
# does LAMB (whole tensors' norms from their chunks' sums, exchanged whole); Adafactor with a
# matrix cut inside a row on 4 ranks follows 1 rank to float rounding. The validation layer is
# on in every rank.
# Usage: mpi_zero_test.sh path/to/vkoptim-mpi-zero
set -eu
bin=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Open MPI refuses root unless told; oversubscription: 4 ranks on 2 cores; containers often lack
# the cross-memory-attach that shared-memory transfers try first.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
run() {
  np=$1
  shift
  if ! mpirun -np "$np" "$bin" --validate "$@" > "$work/log" 2>&1; then
    cat "$work/log"
    echo "FAILED: mpirun -np $np $*"
    exit 1
  fi
  tail -n 1 "$work/log"
}
same() {
  if ! cmp -s "$1" "$2"; then
    echo "FAILED: $1 and $2 differ"
    exit 1
  fi
}
# (8-bit and 4-bit state run on 4 ranks below, saving at step 50; 2 ranks: fp32 and 4-bit cover it.)
for rule in adamw adamw_q8 adamw_q4 lion; do
  ranks="1 2 4"
  case $rule in adamw_q8) ranks="1" ;; adamw_q4) ranks="1 2" ;; lion) ranks="1 4" ;; esac
  for np in $ranks; do
    run "$np" --rule "$rule" --steps 100 --out "$work/$rule.$np"
  done
  for np in $ranks; do [ "$np" = 1 ] || same "$work/$rule.1" "$work/$rule.$np"; done
done
# (The check can fail: the rules' results differ from each other.)
if cmp -s "$work/adamw.1" "$work/adamw_q8.1"; then
  echo "FAILED: fp32 and 8-bit state gave the same parameters"
  exit 1
fi
for rule in adamw_q8 adamw_q4; do
  run 4 --rule "$rule" --steps 100 --save-at 50 --save-dir "$work/ckpt_$rule" --out "$work/saved.$rule"
  same "$work/saved.$rule" "$work/$rule.1"
  resume_ranks="2 1"
  [ "$rule" = adamw_q8 ] && resume_ranks="3 1"
  for np in $resume_ranks; do
    run "$np" --rule "$rule" --steps 100 --resume "$work/ckpt_$rule" --out "$work/resumed.$rule.$np"
    same "$work/resumed.$rule.$np" "$work/$rule.1"
  done
done
# Global clipping over every rank's gradients (a step in two parts): the coefficient is below 1
# at first, and 2 and 4 ranks give 1 rank's parameters bit for bit (the chunk sums are exchanged
# whole and reduced in one fixed order), with fp32 and 8-bit state.
for np in 1 2 4; do
  run "$np" --rule adamw --clip 0.05 --steps 100 --out "$work/clip.$np"
  grep -q "step   1 .*clip coefficient 0\.0" "$work/log" || { cat "$work/log"; echo "FAILED: no clipping"; exit 1; }
done
for np in 2 4; do same "$work/clip.1" "$work/clip.$np"; done
for np in 1 4; do run "$np" --rule adamw_q8 --clip 0.05 --steps 100 --out "$work/clip_q8.$np"; done
same "$work/clip_q8.1" "$work/clip_q8.4"
if cmp -s "$work/clip.1" "$work/adamw.1"; then
  echo "FAILED: clipping changed nothing"
  exit 1
fi
# LAMB: each whole tensor's norms come from its chunks' sums, exchanged whole and reduced in the
# device's order (a step in parts), so 2 and 4 ranks give 1 rank's parameters bit for bit, also
# clipped (three parts).
for np in 1 2 4; do
  run "$np" --rule lamb --steps 100 --out "$work/lamb.$np"
done
for np in 2 4; do same "$work/lamb.1" "$work/lamb.$np"; done
for np in 1 4; do run "$np" --rule lamb --clip 0.05 --steps 100 --out "$work/lamb_clip.$np"; done
same "$work/lamb_clip.1" "$work/lamb_clip.4"
# (The checks can fail: LAMB's run is not AdamW's, and clipping changes it.)
for pair in "lamb.1 clip.1" "lamb.1 lamb_clip.1"; do
  set -- $pair
  if cmp -s "$work/$1" "$work/$2"; then
    echo "FAILED: $1 and $2 are the same parameters"
    exit 1
  fi
done
# Adafactor: on 4 ranks "w1" (50 x 100) is cut inside a row, and its pieces add their row and
# column sums between the parts of each step (clipped: four parts), so 4 ranks follow 1 to float
# rounding; the runs are not LAMB's.
run 1 --rule adafactor --clip 0.05 --steps 100 --out "$work/adafactor.1"
run 4 --rule adafactor --clip 0.05 --steps 100 --out "$work/adafactor.4" --expect "$work/adafactor.1" --tolerance 1e-5
grep -q "largest difference" "$work/log" || { cat "$work/log"; echo "FAILED: not compared"; exit 1; }
grep -q "row and column sums exchanged per step: 300 floats" "$work/log" || { cat "$work/log"; echo "FAILED: w1 not split"; exit 1; }
if cmp -s "$work/adafactor.1" "$work/lamb_clip.1"; then
  echo "FAILED: Adafactor's and LAMB's runs are the same parameters"
  exit 1
fi
# 4-bit AdamW with rank-1 normalised second moments: on 3 ranks "w0" (40 x 65) and on 4 ranks "w1"
# (50 x 100) are cut inside a row, and the ranks combine their row and column maxima with MAX
# between the parts of each step (clipped: three parts): 4 ranks give 1 rank's parameters bit for
# bit, and a checkpoint saved at step 50 on 4 ranks goes on to them on 3 and 1.
run 1 --rule adamw_q4_rank1 --steps 100 --out "$work/rank1.1"
run 4 --rule adamw_q4_rank1 --steps 100 --save-at 50 --save-dir "$work/ckpt_rank1" --out "$work/rank1.4"
grep -q "row and column maxima exchanged per step: 450 floats" "$work/log" || { cat "$work/log"; echo "FAILED: w1 not split"; exit 1; }
same "$work/rank1.1" "$work/rank1.4"
for np in 3 1; do
  run "$np" --rule adamw_q4_rank1 --steps 100 --resume "$work/ckpt_rank1" --out "$work/rank1_resumed.$np"
  same "$work/rank1_resumed.$np" "$work/rank1.1"
done
for np in 1 4; do run "$np" --rule adamw_q4_rank1 --clip 0.05 --steps 100 --out "$work/rank1_clip.$np"; done
same "$work/rank1_clip.1" "$work/rank1_clip.4"
# (The checks can fail: blockwise 4-bit second moments give other parameters, and so does clipping.)
for pair in "rank1.1 adamw_q4.1" "rank1.1 rank1_clip.1"; do
  set -- $pair
  if cmp -s "$work/$1" "$work/$2"; then
    echo "FAILED: $1 and $2 are the same parameters"
    exit 1
  fi
done
# Muon on the matrices (AdamW on the rest): on 3 ranks "w0" and on 4 ranks "w1" are cut, and the
# ranks add their parts of each split matrix's update (then exchange the sums of U^2 as chunks),
# so 3 and 4 ranks give 1 rank's parameters bit for bit, clipped (four parts) too.
for np in 1 3 4; do run "$np" --rule muon --steps 100 --out "$work/muon.$np"; done
grep -q "matrix updates exchanged per step: 5000 floats" "$work/log" || { cat "$work/log"; echo "FAILED: w1 not split"; exit 1; }
for np in 3 4; do same "$work/muon.1" "$work/muon.$np"; done
for np in 1 4; do run "$np" --rule muon --clip 0.05 --steps 100 --out "$work/muon_clip.$np"; done
same "$work/muon_clip.1" "$work/muon_clip.4"
for pair in "muon.1 adamw.1" "muon.1 muon_clip.1"; do
  set -- $pair
  if cmp -s "$work/$1" "$work/$2"; then
    echo "FAILED: $1 and $2 are the same parameters"
    exit 1
  fi
done
echo "mpi_zero: every run gave the same parameters (Adafactor's within float rounding)"
