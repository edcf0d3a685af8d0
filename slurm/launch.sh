# shellcheck shell=bash
# Shared by the slurm/*.sbatch job scripts (sourced, not run): how to start the project's
# commands, in the Apptainer image or from the project's venv, and how a job that reaches its
# time limit stops cleanly and (optionally) requeues itself.
#
# Settings (environment variables, e.g. `sbatch --export=ALL,VARPRO_IMAGE=$PWD/v.sif ...`):
#   VARPRO_IMAGE     Apptainer image (.sif); unset: use the venv below
#   VARPRO_VENV      the project's venv (default: $VARPRO_ROOT/.venv)
#   VARPRO_ROOT      the repository (default: the folder sbatch was called from)
#   APPTAINER_ARGS   extra `apptainer exec` options, e.g. "--bind /scratch"
#   AUTO_REQUEUE     1: a job stopped by its time limit requeues itself (default 0)

VARPRO_ROOT=${VARPRO_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
VARPRO_VENV=${VARPRO_VENV:-$VARPRO_ROOT/.venv}
AUTO_REQUEUE=${AUTO_REQUEUE:-0}

# varpro TOOL [ARGS...]: the command line that starts TOOL (printed one word a line)
varpro_command() {
    if [[ -n ${VARPRO_IMAGE:-} ]]; then
        # shellcheck disable=SC2086  # APPTAINER_ARGS is a list of options
        printf '%s\n' apptainer exec ${APPTAINER_ARGS:-} "$VARPRO_IMAGE" "$@"
    else
        printf '%s\n' "$VARPRO_VENV/bin/$1" "${@:2}"
    fi
}

# varpro_step [SRUN_OPTIONS...] -- TOOL [ARGS...]: run TOOL as one job step under srun, with
# MPI wired up by Slurm's PMI-2 (the image's and the wheel's MPICH speak it), in the
# background, so that this shell can forward the time-limit signal. Returns TOOL's status.
varpro_step() {
    local srun_opts=()
    while [[ $# -gt 0 && $1 != -- ]]; do srun_opts+=("$1"); shift; done
    shift
    local cmd=()
    mapfile -t cmd < <(varpro_command "$@")
    echo "$(date -u +%FT%TZ) srun --mpi=pmi2 ${srun_opts[*]} ${cmd[*]}"
    srun --mpi=pmi2 --kill-on-bad-exit=1 "${srun_opts[@]}" "${cmd[@]}" &
    STEP_PID=$!
    local status=0
    wait "$STEP_PID" || status=$?
    # a trapped signal interrupts `wait`: wait again for the step to finish its checkpoint
    while kill -0 "$STEP_PID" 2>/dev/null; do wait "$STEP_PID" || status=$?; done
    return "$status"
}

# With `#SBATCH --signal=B:USR1@SECONDS`, Slurm signals this shell SECONDS before the time
# limit: stop the step with SIGTERM (the tools save what they finished and exit) and, with
# AUTO_REQUEUE=1, put the job back in the queue; rerunning the same job resumes the work.
STOPPED_BY_TIME_LIMIT=0
on_time_limit() {
    STOPPED_BY_TIME_LIMIT=1
    echo "$(date -u +%FT%TZ) time limit near: stopping the step (its work is saved)"
    if [[ -n ${STEP_PID:-} ]]; then kill -TERM "$STEP_PID" 2>/dev/null || true; fi
}
trap on_time_limit USR1

# finish STATUS: requeue when stopped by the time limit and AUTO_REQUEUE=1, else exit STATUS
finish() {
    local status=$1
    if [[ $STOPPED_BY_TIME_LIMIT == 1 ]]; then
        if [[ $AUTO_REQUEUE == 1 && -n ${SLURM_JOB_ID:-} ]]; then
            echo "requeueing job $SLURM_JOB_ID: it resumes where it stopped"
            scontrol requeue "$SLURM_JOB_ID"
            exit 0
        fi
        echo "stopped by the time limit; submit the same command again to resume"
    fi
    exit "$status"
}
