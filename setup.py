"""pip install of gausstr_core (training, evaluation; no ROS) and gausstr_ros (node, bag tools).

On a ROS 2 machine the package is built with colcon from CMakeLists.txt instead; this file is for
virtual environments: training clusters, development machines and CI (see scripts/setup.sh).
"""

from setuptools import find_packages, setup

setup(
    name="gausstr_ros",
    version="0.1.0",
    description="Open-vocabulary 3D semantic occupancy from surround cameras (GaussTR) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["gausstr_core", "gausstr_core.*", "gausstr_ros", "gausstr_ros.*"]),
    package_data={
        "gausstr_core": ["voxelize/csrc/*.cu", "voxelize/csrc/*.cpp", "voxelize/csrc/*.h"],
        "gausstr_ros": ["assets/*.safetensors", "assets/*.mcap", "assets/*.json"],
    },
    # Ranges, not pins: a training cluster brings its own CUDA build of torch. The exact versions
    # this project is tested with are pinned in requirements/.
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy>=1.26",
        "scipy>=1.11",
        "pyyaml>=6",
        "safetensors>=0.4",
        "open_clip_torch>=2.24",
        "timm>=1.0",
        "gsplat>=1.4",
        "rosbags>=0.10",
        "transforms3d>=0.4",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "pillow>=10",
    ],
    extras_require={
        "nuscenes": ["nuscenes-devkit>=1.1.11"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6"],
    },
    entry_points={
        "console_scripts": [
            "gausstr-train=gausstr_core.train.cli:main",
            "gausstr-eval=gausstr_core.evaluation.cli:main",
            "gausstr-synth=gausstr_core.data.synthetic.cli:main",
            "gausstr-convert-official=gausstr_core.io.convert_official:main",
            "occupancy_node=gausstr_ros.node.occupancy_node:main",
            "gausstr-make-bag=gausstr_ros.bag.make_bag:main",
            "gausstr-bag-eval=gausstr_ros.bag.evaluate:main",
            "gausstr-demo=gausstr_ros.demo:main",
        ]
    },
)
