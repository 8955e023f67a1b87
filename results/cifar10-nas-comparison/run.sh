#!/bin/bash
# CIFAR-10: HPO vs multi-trial NAS, 10 minutes of search each, then one report
set -x
cd /work/run_tree && . /work/main/.venv/bin/activate
OUT=/work/main/reports/nascmp-cifar10; mkdir -p $OUT
sed -e 's/^maxExperimentDuration: 30m/maxExperimentDuration: 8m/' -e 's/^experimentName: cifar10-families/experimentName: cifar10-nascmp-hpo/' nni_configs/cifar10_families.yml > nni_configs/cifar10_nascmp.yml
rm -rf $OUT/hpo_status.log
date +%s > $OUT/hpo_start
python -m experiments.secure nnictl create --config nni_configs/cifar10_nascmp.yml --port 8097 > $OUT/hpo_create.log 2>&1
ID=$(sed 's/\x1b\[[0-9;]*m//g' $OUT/hpo_create.log | grep -o "Experiment ID: [a-z0-9]*" | head -1 | awk '{print $3}'); echo "$ID" > $OUT/hpo_id
[ -n "$ID" ] || { echo "no experiment id"; exit 1; }
# wait for the experiment to end (DONE/NO_MORE_TRIAL)
for i in $(seq 1 90); do
  S=$(curl -s http://127.0.0.1:8097/api/v1/nni/check-status | python -c "import sys,json;print(json.load(sys.stdin)['status'])" 2>/dev/null)
  echo "$(date +%T) $S" >> $OUT/hpo_status.log
  [ "$S" = "DONE" ] || [ "$S" = "NO_MORE_TRIAL" ] && break
  sleep 10
done
sleep 5; nnictl stop $ID >> $OUT/hpo_create.log 2>&1
date +%s > $OUT/nas_start
python -m experiments.nas.multitrial --dataset cifar10 --strategy evolution --trials 200 --duration 8m --port 18182 \
    --concurrency 2 --population 6 --sample-size 3 --seed 0 --out $OUT/evolution-cifar10.json \
    --params recipes/nas_darts.json --epochs 2 --train_subset 10000 --threads 1 --data-dir ../shared/data > $OUT/evolution_search.log 2>&1
date +%s > $OUT/nas_end
rm -f nni_configs/cifar10_nascmp.yml
[ -f $OUT/evolution-cifar10.json ] || { echo no architecture; exit 1; }
python -m experiments.report $ID --epochs 2 --seeds 0 1 2 --jobs 1 \
    --baseline $OUT/evolution-cifar10.json baselines/simple_cnn.json --data-dir ../shared/data --out $OUT/report > $OUT/report_run.log 2>&1
echo done > $OUT/DONE
