"""Node parameters declared from one table: description, allowed values, range, read-only.

Each node lists its parameters as ``ParameterSpec``s; ``declare_parameters`` declares them with a
``ParameterDescriptor`` (so ``ros2 param describe`` explains every one), checks the values given
at start-up (a YAML file, ``--ros-args -p``) and refuses a later ``ros2 param set`` outside the
allowed values. Read-only parameters are read once, at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: bool | int | float | str  # its Python type is the parameter's type
    description: str
    choices: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None  # inclusive (from, to)
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.value_range is not None:
            low, high = self.value_range
            if isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
                ]
        return descriptor

    def check(self, value) -> str | None:
        """Why ``value`` is not allowed, or None. (Ranges and types rclpy checks itself.)"""
        if self.choices and value not in self.choices:
            return f"parameter {self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        return None


def declare_parameters(node, specs: tuple[ParameterSpec, ...]) -> None:
    """Declare ``specs`` on ``node``; raises ValueError naming a start-up value that is not allowed."""
    for spec in specs:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        problem = spec.check(node.get_parameter(spec.name).value)
        if problem:
            raise ValueError(problem)

    def check_update(parameters) -> SetParametersResult:
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            problem = spec.check(parameter.value) if spec else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(check_update)
