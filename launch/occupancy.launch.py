"""Launch gausstr_ros's occupancy node (and RViz with config/occupancy.rviz) — wiring only.

    ros2 launch gausstr_ros occupancy.launch.py checkpoint:=/models/gausstr.safetensors use_rviz:=true

Arguments:
    params_file: the node's parameters (default: the package's config/occupancy.yaml).
    checkpoint: model checkpoint; overrides the params file when not empty.
    device: auto, cuda, cuda:N or cpu; overrides the params file when not empty.
    namespace: namespace of the node (its input topics are resolved in it when relative, and its
        outputs are published in it) and of RViz.
    use_rviz: also start RViz showing the Gaussians, the occupancy cloud and a rendered depth image.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

ARGUMENTS = {
    "params_file": "Parameter file of the occupancy node",
    "checkpoint": "GaussTR checkpoint (.safetensors); empty = the params file's",
    "device": "Inference device (auto, cuda, cuda:N, cpu); empty = the params file's",
    "namespace": "Namespace of the node and RViz",
    "use_rviz": "Start RViz with config/occupancy.rviz (true/false)",
}


def _occupancy_node(context):
    # Only non-empty command-line values override the params file, so an unset argument never
    # replaces a checkpoint configured there with "".
    overrides = {}
    for name in ("checkpoint", "device"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    parameters = [LaunchConfiguration("params_file")] + ([overrides] if overrides else [])
    return [
        Node(
            package="gausstr_ros",
            executable="occupancy_node",
            name="occupancy_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=parameters,
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("gausstr_ros")
    defaults = {
        "params_file": PathJoinSubstitution([share, "config", "occupancy.yaml"]),
        "checkpoint": "",
        "device": "",
        "namespace": "",
        "use_rviz": "false",
    }
    arguments = [
        DeclareLaunchArgument(name, default_value=defaults[name], description=text)
        for name, text in ARGUMENTS.items()
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=LaunchConfiguration("namespace"),
        arguments=["-d", PathJoinSubstitution([share, "config", "occupancy.rviz"])],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
        output="screen",
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=_occupancy_node), rviz])
