"""Maps common/, agent/ and coordinator/ into the ``etcdguard`` namespace.

Every package below those folders is found here, so a new subpackage can never
be left out of the wheel (a hand-kept list once dropped the coordinator's restore
package). Everything else about the project is in pyproject.toml.
"""

from setuptools import find_packages, setup

TOPS = ("common", "agent", "coordinator")

setup(
    package_dir={f"etcdguard.{top}": top for top in TOPS},
    packages=[f"etcdguard.{name}" for name in find_packages(include=[*TOPS, *(f"{top}.*" for top in TOPS)])],
)
