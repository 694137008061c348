# Section E of README: the width-8 CNN's 5-fold patient CV on per-patient stain-normalised patches.
# The rules (and these commands) are in experiments/idc-cv-stain/stain_normalise.sh (Reinhard) and experiments/idc-cv-stain/stain_macenko.sh
# (Macenko, Macenko vectors), committed before their runs; the un-normalised baseline is .work/cv-w8 (section D).
set -e
bash experiments/idc-cv-stain/stain_normalise.sh .work/idc   # histoeq normalise --method reinhard-lab, then the CV sweep, then the rule
bash experiments/idc-cv-stain/stain_macenko.sh .work/idc     # the same for macenko and macenko-vectors
python scripts/stain_tables.py .work/cv-w8 reinhard-lab=.work/cv-w8-reinhard macenko=.work/cv-w8-macenko \
  macenko-vectors=.work/cv-w8-macenko-vectors > docs/results/idc-cv-stain/tables.md
