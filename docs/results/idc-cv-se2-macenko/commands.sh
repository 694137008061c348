# Seventh session. On the lent H200 (device tool, carry .work/idc-pack and .work/wheels-gpu), 499 s:
NORMALISE=macenko CV_JOBS="se2:none se2:none:idc-macenko" CV_WIDTH=8 CV_SEEDS=10 CV_EPOCHS=3 CV_BATCH=128 \
CANDIDATES="se2:8:none:3:idc-macenko:3:128,se2:8:none:4:idc-macenko:3:128,se2:8:none:5:idc-macenko:3:128,se2:8:none:6:idc-macenko:3:128,se2:8:none:7:idc-macenko:3:128,se2:8:none:8:idc-macenko:3:128" \
LATER_CV_JOBS="se2:none se2:none:idc-macenko" LATER_CV_WIDTH=32 LATER_CV_SEEDS=5 LATER_CV_EPOCHS=6 LATER_CV_BATCH=512 \
SWEEP_JOBS="" BUDGET=470 bash experiments/lent-gpu/gpu_run.sh
# Here, with the run's cv.tar.gz and final.tar.gz in .work/gpu7-files: the rule (step 1 verdict, step 2 members
# trained on this CPU as amended, validation gate, then test).
bash experiments/idc-cv-se2-macenko/ship_se2_macenko.sh .work/gpu7-files .work/idc
python scripts/stain_tables.py --model se2 .work/gpu7/cv/se2-none-idc-w8 macenko=.work/gpu7/cv/se2-none-idc-macenko-w8
python scripts/stain_tables.py --model se2 .work/gpu7/cv/se2-none-idc-w32 macenko=.work/gpu7/cv/se2-none-idc-macenko-w32
# The candidate's 4 test slides (reported, deciding nothing):
histoeq predict ../shared/data/idc/slides/{8975,8918,9124,9036}.tiff --model .work/gpu7/candidate.onnx --out .work/gpu7/pred
python scripts/score_tiles.py .work/gpu7/pred ../shared/data/idc/slides     # candidate/slides-score.txt
# Members kept in candidate/members (rewritten with scripts/upgrade_kernel_basis.py; export rebuilds the file):
histoeq export docs/results/idc-cv-se2-macenko/candidate/members/member* --invariant-to d4 --out idc-se2-macenko.onnx
