"""The executors without a cluster: in process, and the Ray executor's actor pool against a stand-in Ray."""

from __future__ import annotations

import pytest

from subsetlm.distributed import IN_PROCESS, executor_for, map_stateful, report_progress
from subsetlm.distributed import ray_backend
from subsetlm.distributed.ray_backend import RayExecutor, cluster_actors


class _Counter:
    """A setup that counts how often a state was built."""

    def __init__(self):
        self.built = 0

    def __call__(self):
        self.built += 1
        return {"offset": 100}


def _work(state, task):
    report_progress(task)
    return state["offset"] + task


def test_in_process_map_stateful_builds_the_state_once_and_keeps_task_order():
    setup, units = _Counter(), []
    out = list(map_stateful(None, setup, _work, [3, 1, 2], progress=units.append))
    assert out == [(0, 103), (1, 101), (2, 102)]
    assert setup.built == 1 and units == [3, 1, 2]  # progress forwarded live, per report


def test_in_process_map_stateful_draws_each_task_after_the_previous_one_finished():
    drawn, finished = [], []

    def tasks():
        for t in range(3):
            drawn.append(t)
            assert drawn[:-1] == finished  # every earlier task done before this one is drawn
            yield t

    def work(state, task):
        finished.append(task)
        return task

    assert [r for _, r in IN_PROCESS.map_stateful(lambda: None, work, tasks())] == [0, 1, 2]


def test_in_process_executor_is_the_plain_protocol_too():
    assert IN_PROCESS(lambda t: t * 2, [1, 2, 3]) == [2, 4, 6]


def test_executor_for_local_is_none_ray_is_lazy_and_unknown_backends_fail():
    assert executor_for("local") is None
    run = executor_for("ray", "127.0.0.1:1", actors=3)  # no connection is made before a call
    assert isinstance(run, RayExecutor) and run.actors == 3 and callable(run)
    with pytest.raises(ValueError, match="backend='spark'; choose one of local, ray"):
        executor_for("spark")
    with pytest.raises(ValueError, match="actors=0"):
        executor_for("ray", actors=0)


class _FakeRay:
    def __init__(self, **res):
        self.res = res

    def cluster_resources(self):
        return self.res


def test_default_actor_pool_is_one_per_gpu_with_cuda_else_one_per_cpu():
    assert cluster_actors(_FakeRay(CPU=16.0, GPU=4.0), 1, 1.0) == 4
    assert cluster_actors(_FakeRay(CPU=16.0, GPU=4.0), 0, 1.0) == 16
    assert cluster_actors(_FakeRay(CPU=16.0), 0, 4.0) == 4
    with pytest.raises(ValueError, match="no GPUs"):
        cluster_actors(_FakeRay(CPU=16.0), 1, 1.0)


# -- RayExecutor.map_stateful against a stand-in for Ray's actor API ------------------------------
class _Ref:
    def __init__(self, actor, func, task):
        self.actor, self.func, self.task = actor, func, task


class _Method:
    def __init__(self, actor):
        self.actor = actor

    def remote(self, func, task):
        ref = _Ref(self.actor, func, task)
        self.actor.queue.append(ref)
        self.actor.ray.max_in_flight = max(self.actor.ray.max_in_flight, len(self.actor.queue))
        return ref


class _Actor:
    def __init__(self, ray, cls, setup):
        self.ray, self.queue, self.killed = ray, [], False
        self.impl = cls(setup)  # the real _Worker: setup() once per actor
        self.run = _Method(self)


class _ActorClass:
    def __init__(self, ray, cls):
        self.ray, self.cls = ray, cls

    def options(self, **kw):
        self.ray.options = kw
        return self

    def remote(self, setup):
        actor = _Actor(self.ray, self.cls, setup)
        self.ray.actors.append(actor)
        return actor


class _StandInRay(_FakeRay):
    """Actors run their queued tasks in order; ``wait`` finishes the oldest task of the busiest actor."""

    def __init__(self, **res):
        super().__init__(**res)
        self.actors, self.max_in_flight, self.options = [], 0, None

    def remote(self, cls):
        return _ActorClass(self, cls)

    def put(self, obj):
        return obj

    def wait(self, refs, num_returns=1):
        busiest = max((a for a in self.actors if a.queue), key=lambda a: len(a.queue))
        ref = busiest.queue[0]
        assert ref in refs
        return [ref], [r for r in refs if r is not ref]

    def get(self, ref):
        assert ref.actor.queue[0] is ref, "an actor runs its tasks in submission order"
        ref.actor.queue.pop(0)
        return ref.actor.impl.run(ref.func, ref.task)

    def kill(self, actor):
        actor.killed = True


@pytest.mark.parametrize("actors,n_tasks", [(3, 10), (4, 2), (None, 7)])
def test_ray_map_stateful_pairs_every_result_with_its_task_on_a_bounded_pool(monkeypatch, actors, n_tasks):
    ray = _StandInRay(CPU=2.0)
    monkeypatch.setattr(ray_backend, "connect", lambda address: ray)
    setup, units = _Counter(), []
    run = RayExecutor("x", actors=actors)
    out = dict(run.map_stateful(setup, _work, (t for t in range(n_tasks)), progress=units.append, num_gpus=0))
    assert out == {i: 100 + i for i in range(n_tasks)}
    assert len(ray.actors) == min(actors or 2, n_tasks)  # None: one actor per CPU; none without a task
    assert setup.built == len(ray.actors)  # one state per actor, built on the actor
    assert sorted(units) == list(range(1, n_tasks))  # each task's reported units, summed per task (0: none)
    assert ray.max_in_flight <= ray_backend._IN_FLIGHT
    assert all(a.killed for a in ray.actors)  # the pool is released at the end
    assert ray.options["max_restarts"] == -1 and ray.options["max_task_retries"] == -1  # dead actors restart


def test_ray_map_stateful_closed_early_kills_its_actors(monkeypatch):
    ray = _StandInRay(CPU=4.0)
    monkeypatch.setattr(ray_backend, "connect", lambda address: ray)
    results = RayExecutor("x", actors=2).map_stateful(_Counter(), _work, range(10))
    assert next(results) == (0, 100)  # the first task's result (the stand-in finishes the oldest task first)
    results.close()
    assert len(ray.actors) == 2 and all(a.killed for a in ray.actors)


def test_ray_map_stateful_asks_ray_for_gpus_only_when_told(monkeypatch):
    ray = _StandInRay(CPU=4.0, GPU=2.0)
    monkeypatch.setattr(ray_backend, "connect", lambda address: ray)
    list(RayExecutor("x").map_stateful(_Counter(), _work, range(5), num_gpus=1))
    assert ray.options["num_gpus"] == 1 and len(ray.actors) == 2  # one actor per GPU
