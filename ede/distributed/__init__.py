"""Ray Train / Ray Tune wiring around the core's single training loop.

Nothing here re-implements training: workers run `ede.core.training.train_loop` with a
`RayRuntime`. Import the submodules directly (`ede.distributed.trainer`,
`ede.distributed.tuning`); this package imports nothing eagerly, so the core and
torch-free commands never pay for Ray's import.
"""
