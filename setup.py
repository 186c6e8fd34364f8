"""Packaging for efl. The gRPC code is generated from protos/ by `make proto` (run by `make setup`)."""
from setuptools import find_packages, setup

setup(
    name="efl",
    version="0.1.0",
    description="Vertical (split) federated learning on TensorFlow 1.15 graph mode",
    packages=find_packages(include=["efl", "efl.*"]),
    python_requires=">=3.7,<3.8",
    install_requires=[],  # pinned in requirements.txt; installed by `make setup`
)
