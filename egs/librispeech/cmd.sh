# Where this recipe's --nj jobs run (Kaldi's cmd.sh). Every --nj command reads PYKALDI2_CMD
# when it is given no --cmd: run.pl runs the jobs on this machine (at most --max-jobs-run N at a
# time, default the number of CPUs); slurm.pl submits each step as one sbatch array job and
# waits for it, job logs in exp/*/log/, queue files in exp/*/q/. On a SLURM cluster, e.g.:
#   export PYKALDI2_CMD="slurm.pl --mem 4G --time 4:00:00"
# (--mem/--time/--num-threads/--gpu map to sbatch options through conf/slurm.conf in Kaldi's
# format when there is one; single-dash options such as -p PARTITION go to sbatch as they are).
export PYKALDI2_CMD="${PYKALDI2_CMD:-run.pl}"
