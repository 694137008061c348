#!/usr/bin/env bash
# The one prepared run on a lent GPU machine (device tool), carried with .work/idc-pack and .work/wheels:
#   run(command="BUDGET=170 bash scripts/device/gpu_run.sh", carry=[".work/idc-pack", ".work/wheels"])
# The IDC sweep (cnn, p4m, se2; fractions 1, 0.5, 0.25, 0.1; 3 seeds; EPOCHS epochs) with one process per
# model/augmentation sharing the GPU, gathered into one folder (`histoeq sweep --report-only`), and the full-data
# p4m candidate for the shipped model (stain augmentation, selected on validation AUC only). p4m is exactly
# D4-invariant, so D4 (rot90) augmentation cannot change its loss: its rot90 cells are not run. The first session
# ran this with fractions 1, 0.25, 0.1 and 3 epochs on ~4 minutes (the p4m candidate failed there).
# Every step is time-boxed; what finished comes back in $OUT.
set -u
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH=$PWD OMP_NUM_THREADS=2 MPLBACKEND=Agg
BUDGET=${BUDGET:-170}
EPOCHS=${EPOCHS:-6}
H="python -m histoeq"
start=$(date +%s)
# albumentations was missing at run time in the first run (cause not established: the install's output was cut):
# install into the interpreter that runs histoeq, and check the import before spending GPU time.
python -m pip install --no-deps --no-index -q .work/wheels/*.whl 2>&1 | tail -5
python -c "import albumentations, shapely; print('albumentations', albumentations.__version__)" || exit 3
python -c "import torch, onnxruntime as o; print(torch.__version__, torch.cuda.get_device_name(0), o.__version__, o.get_available_providers())"
python scripts/device/pack_dataset.py unpack .work/idc-pack /tmp/idc
echo "unpacked at $(( $(date +%s) - start )) s"
mkdir -p /tmp/final /tmp/sweep
timeout "$BUDGET" $H train --data /tmp/idc --model p4m --augment stain --epochs 8 --patience 4 \
  --batch-size 512 --num-workers 4 --device cuda --seed 0 --out /tmp/final/p4m > /tmp/final/p4m.log 2>&1 &
for job in cnn:none cnn:rot90 p4m:none se2:none se2:rot90; do
  m=${job%%:*}; a=${job##*:}
  timeout "$BUDGET" $H sweep --data /tmp/idc --models "$m" --augment "$a" --fractions 1,0.5,0.25,0.1 --seeds 3 \
    --epochs "$EPOCHS" --patience 3 --batch-size 512 --device cuda --out "/tmp/sweep/$m-$a" > "/tmp/sweep/$m-$a.log" 2>&1 &
done
wait
echo "training done at $(( $(date +%s) - start )) s"
mkdir -p /tmp/sweep/all/runs
for d in /tmp/sweep/*-*/runs/*/; do ln -s "$d" "/tmp/sweep/all/runs/$(basename "$d")"; done
$H sweep --out /tmp/sweep/all --report-only > /tmp/sweep/all.log 2>&1
tar -C /tmp -czf "$OUT/sweep.tar.gz" --exclude='*.pt' --exclude=sweep/all/runs sweep
tar -C /tmp -czf "$OUT/final.tar.gz" --exclude='last.pt' final
ls -la "$OUT"
for f in /tmp/sweep/*.log /tmp/final/*.log; do echo "== $f"; tail -c 300 "$f"; done
