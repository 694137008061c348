set -e
common=(--data .work/idc --out .work/cv-w8 --fractions 1 --seeds 5 --cv 5 --epochs 3 --patience 3 --width 8 --batch-size 128 --rotations 8 --device cpu)
histoeq sweep --models cnn --augment none,stain "${common[@]}"
histoeq sweep --models p4m --augment none,stain "${common[@]}"
histoeq sweep --models se2 --augment none "${common[@]}"   # sixth session, folds 0-3 (fold 4 cut off)
