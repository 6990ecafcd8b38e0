import os
import shutil
import tempfile

import jax

# Tests run on the CPU; keep XLA from grabbing every core for its thread pools' warm-up.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_CACHE_ENV = "PURERL_TEST_XLA_CACHE"


def pytest_configure(config):
    # Many tests build the same small program (a trainer's small config, vmapped over two seeds)
    # in different files. A compilation cache made for this run and shared by its xdist workers
    # (they inherit the variable) compiles each once; a hit loads the same executable, so
    # results are unchanged.
    if _CACHE_ENV not in os.environ:
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="purerl-tests-xla-")
        config._purerl_cache_owner = True
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def pytest_unconfigure(config):
    if getattr(config, "_purerl_cache_owner", False):
        shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)


# pytest-xdist (--dist loadfile) hands out whole files in collection order: the longest files
# first leaves short ones for the end, so neither CI core idles through one long last file.
LONGEST_FIRST = ("test_contract.py", "test_sac.py", "test_checkpoint.py", "test_actor_critic.py",
                 "test_notebooks.py", "test_playground.py", "test_distributed.py",
                 "test_finite_metrics.py", "test_ddpg_td3.py", "test_config.py", "test_dqn.py",
                 "test_ppo.py", "test_trpo.py", "test_preset_learning.py",
                 "test_distributed_cli.py", "test_reinforce.py", "test_notebook_off_policy.py",
                 "test_loggers.py", "test_minatar.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: same order on
    # every worker, tests within a file keep theirs
