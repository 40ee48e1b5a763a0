#!/usr/bin/env bash
# Reproduce the Lotus-1 demo model in models/demo_lotus1/ on a CPU with the product's own trainer.
#
#   scripts/train_lotus1_demo_model.sh [OUTDIR] [WORKDIR]   (defaults: models/demo_lotus1, build/lotus1_demo)
#
# 1. base model in Stable Diffusion 2 layout (python -m lotus2_ros.train.lotus1_demo): a small SD2-structured
#    U-Net (random init, 4 input channels, no task switcher), a small 4-channel AutoencoderKL trained on
#    synthetic RGB / disparity / normal images, a tiny CLIP text encoder, SD2's noise schedule
# 2. lotus2 train-core --backend lotus1 --mode d --full-finetune, once per task (a Lotus-1 model has one
#    U-Net per task): the task switcher is added, the whole U-Net trained as the paper does (x0 at timestep
#    999, the detail preserver doubling every batch with the reconstruction task), on synthetic scenes
#    rendered on the fly
# 3. OUTDIR/lotus-depth-d-disparity + OUTDIR/lotus-normal-d in the released diffusers layout (loads in the
#    official LotusDPipeline unchanged) + OUTDIR/model.json (the model's own defaults), then lotus2 evaluate
#    on held-out synthetic scenes: demo vs the untrained start vs the constant baseline (OUTDIR/EVAL.md)
#
# Environment: PYTHON (default .venv/bin/python if present, else python3), NICE (default 10),
# OMP_NUM_THREADS (default 1). Deterministic for a given machine and library versions (seeded; CPU);
# about 35 min on 2 shared cores. Every stage resumes: re-running after an interruption continues.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

OUT=${1:-models/demo_lotus1}
WORK=${2:-build/lotus1_demo}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
RUN=(nice -n "${NICE:-10}" "$PYTHON")
LOTUS2=("${RUN[@]}" -m lotus2_ros.cli.main)

VAE_STEPS=1200
STEPS=600
COMMON=(--backend lotus1 --mode d --full-finetune --data synthetic --synthetic-size 160x128 --batch-size 8
        --num-workers 1 --seed 0 --val-samples 16 --validate-every 200 --checkpoint-every 100
        --detail-preserver-ratio 1)

mkdir -p "$WORK"
start=$(date +%s)

# 1. Base model (skipped when already built; an interrupted VAE training resumes from its checkpoint).
if [[ ! -f "$WORK/base/base_model_report.json" ]]; then
  "${RUN[@]}" -m lotus2_ros.train.lotus1_demo "$WORK/base" --vae-steps "$VAE_STEPS" --vae-batch-size 8
fi
BASE="$WORK/base/base_model"

# 2. One Lotus-D U-Net per task, and its untrained start (same initialisation, zero steps).
for task in depth normal; do
  "${LOTUS2[@]}" train-core --base-model "$BASE" "${COMMON[@]}" --task "$task" --max-steps "$STEPS" --lr 1e-3 \
    --lr-scheduler cosine --warmup-steps 30 --resume latest --no-progress -o "$WORK/$task"
  "${LOTUS2[@]}" train-core --base-model "$BASE" "${COMMON[@]}" --task "$task" --max-steps 0 --validate-every 0 \
    --no-progress -o "$WORK/untrained_$task"
done

# 3. The committed folder: one pipeline folder per task and the model's own defaults.
MODEL_JSON='{
  "description": "lotus2_ros Lotus-1 demo model: Lotus-D depth and normal U-Nets (SD2 structure at toy width, fully trained with the detail preserver) over a small 4-channel AutoencoderKL, trained on synthetic scenes by scripts/train_lotus1_demo_model.sh",
  "process_res": 160,
  "tasks": ["depth", "normal"],
  "depth_output": "disparity",
  "trained_size_px": [160, 128]
}'
rm -rf "$OUT" "$WORK/untrained"
mkdir -p "$OUT" "$WORK/untrained"
cp -r "$WORK/depth/export/lotus-depth-d-disparity" "$WORK/normal/export/lotus-normal-d" "$OUT/"
cp -r "$WORK/untrained_depth/export/lotus-depth-d-disparity" "$WORK/untrained_normal/export/lotus-normal-d" \
  "$WORK/untrained/"
echo "$MODEL_JSON" > "$OUT/model.json"
echo "$MODEL_JSON" > "$WORK/untrained/model.json"

N=50
EVAL=(--task depth --task normal --synthetic "$N" --synthetic-size 160x128)
"${LOTUS2[@]}" evaluate --backend lotus1 --weights "$OUT" "${EVAL[@]}" --name "Lotus-1 demo (Lotus-D)" \
  -o "$WORK/eval/demo" | tee "$WORK/eval_demo.txt"
"${LOTUS2[@]}" evaluate --backend lotus1 --weights "$WORK/untrained" "${EVAL[@]}" --name "untrained start" \
  -o "$WORK/eval/untrained" | tee "$WORK/eval_untrained.txt"
"${LOTUS2[@]}" evaluate --baseline constant "${EVAL[@]}" --name "constant baseline" -o "$WORK/eval/constant" \
  | tee "$WORK/eval_constant.txt"

"${RUN[@]}" scripts/demo_model_report.py --lotus1 "$WORK" "$OUT" "$(( $(date +%s) - start ))" "$N"
