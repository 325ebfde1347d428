"""The data stages' worker pool: results in job order, the same with any number of workers."""
import math

from model.pool import map_jobs


def square_root_digits(job):
    """A job whose result depends only on the job (what every data stage guarantees)."""
    return job, f"{math.sqrt(job):.12f}"


def test_ordered_results_follow_the_jobs_whatever_the_workers():
    jobs = list(range(40, 0, -1))
    serial = list(map_jobs(square_root_digits, jobs, workers=1, progress=False))
    assert [job for job, _ in serial] == jobs
    pooled = list(map_jobs(square_root_digits, jobs, workers=2, chunksize=3, progress=False))
    assert pooled == serial


def test_unordered_results_are_the_same_set():
    jobs = list(range(30))
    out = list(map_jobs(square_root_digits, jobs, workers=2, ordered=False, progress=False))
    assert sorted(out) == [square_root_digits(j) for j in jobs]


def test_few_jobs_run_in_this_process():
    seen = []

    def record(job):        # a closure cannot be sent to a spawned worker: proves no pool ran
        seen.append(job)
        return job * 2

    assert list(map_jobs(record, [1, 2, 3], workers=4, min_jobs=8, progress=False)) == [2, 4, 6]
    assert seen == [1, 2, 3]
    assert list(map_jobs(record, [5], workers=4, progress=False)) == [10]   # 1 job, 1 worker
    assert list(map_jobs(record, [], workers=4, progress=False)) == []
