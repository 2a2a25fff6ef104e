"""Component contract and the registry of component types.

Only registered classes can appear in a flow: the registry is the allow-list of
everything a flow may execute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

# Value types a port or parameter can declare. "any" accepts everything.
VALUE_TYPES = {
    "any": None,
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "number": (int, float),
    "object": (dict,),
    "list": (list,),
}


def types_compatible(output_type: str, input_type: str) -> bool:
    """True when an output of `output_type` may feed an input of `input_type` (an int is a number)."""
    return "any" in (output_type, input_type) or output_type == input_type or (output_type, input_type) == ("int", "number")


def type_accepts(declared: str, value: Any) -> bool:
    """True when `value` fits the declared value type (bool is not an int here)."""
    allowed = VALUE_TYPES[declared]
    if allowed is None:
        return True
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed)


@dataclass(frozen=True)
class Input:
    """An input of a component: set by a parameter in the flow, or fed by an edge."""

    name: str
    type: str = "any"
    required: bool = True
    default: Any = None
    choices: tuple[Any, ...] | None = None
    description: str = ""
    connectable: bool = True
    # Accepts several edges; the component receives a list of their values in edge order.
    multiple: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "choices": list(self.choices) if self.choices is not None else None,
            "description": self.description,
            "connectable": self.connectable,
            "multiple": self.multiple,
        }


@dataclass(frozen=True)
class Output:
    """An output of a component; edges start from outputs."""

    name: str
    type: str = "any"
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "description": self.description}


class Component:
    """Base class of every flow component.

    Subclasses declare `name`, `inputs` and `outputs` and implement
    `run(**values) -> {output_name: value}`; an output left out of the result
    is not produced, and nodes fed only by it are skipped. A component that waits
    (on the network) defines `async def run`: the runner awaits it, so runs overlap;
    a sync `run` that is not `quick` runs in a thread, which cannot be interrupted.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[Output, ...]] = ()
    # When set, inputs with other names (identifiers, e.g. a template's `{text}`) are accepted,
    # from params or edges, as declared by this Input; `run()` receives them as keyword arguments.
    extra_inputs: ClassVar[Input | None] = None
    # Quick: `run()` only computes on what it is given, in microseconds to milliseconds, and never waits
    # (no network, no disk, no sleep). The runs of a flow made only of quick components may be executed
    # one after another in one worker task; a component that can wait would hold up the others.
    quick: ClassVar[bool] = False

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        """Component-specific checks of literal params at save time: `(param, msg, type)` per problem.

        Variable references (`{"variable": NAME}`) are not literal and are left out of `params`.
        """
        return []

    def __init__(self, *, node_id: str, context: Any):
        self.node_id = node_id
        self.context = context

    def run(self, **values: Any) -> dict[str, Any]:  # pragma: no cover - contract (or `async def run`)
        raise NotImplementedError

    @classmethod
    def input(cls, name: str) -> Input | None:
        found = next((i for i in cls.inputs if i.name == name), None)
        if found is None and cls.extra_inputs is not None and isinstance(name, str) and name.isidentifier():
            return Input(name, cls.extra_inputs.type, required=False, description=cls.extra_inputs.description)
        return found

    @classmethod
    def output(cls, name: str) -> Output | None:
        return next((o for o in cls.outputs if o.name == name), None)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "description": cls.description,
            "inputs": [i.describe() for i in cls.inputs],
            "outputs": [o.describe() for o in cls.outputs],
            "extra_inputs": cls.extra_inputs.describe() if cls.extra_inputs is not None else None,
        }


@dataclass
class Registry:
    """Maps component type names to classes; refuses malformed components at import time."""

    _components: dict[str, type[Component]] = field(default_factory=dict)

    def register(self, cls: type[Component]) -> type[Component]:
        problems = self._problems(cls)
        if problems:
            raise TypeError(f"Component {cls.__qualname__} cannot be registered: {'; '.join(problems)}")
        self._components[cls.name] = cls
        return cls

    def _problems(self, cls: type[Component]) -> list[str]:
        problems = []
        if not (isinstance(cls, type) and issubclass(cls, Component)):
            return ["it is not a Component subclass"]
        if not cls.name:
            problems.append("it has no name")
        elif cls.name in self._components and self._components[cls.name] is not cls:
            problems.append(f"the name {cls.name!r} is taken by {self._components[cls.name].__qualname__}")
        if cls.run is Component.run:
            problems.append("it does not implement run()")
        if not (cls.__doc__ or "").strip():
            problems.append("it has no docstring")
        for kind, ports in (("input", cls.inputs), ("output", cls.outputs)):
            names = [p.name for p in ports]
            if len(names) != len(set(names)):
                problems.append(f"duplicate {kind} names")
            problems += [f"{kind} {p.name!r} has unknown type {p.type!r}" for p in ports if p.type not in VALUE_TYPES]
        return problems

    def get(self, name: str) -> type[Component] | None:
        return self._components.get(name)

    def names(self) -> list[str]:
        return sorted(self._components)

    def catalogue(self) -> list[dict[str, Any]]:
        return [self._components[n].describe() for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def all_quick(self, types) -> bool:
        """Whether every one of these component types is registered and quick (an empty graph is not)."""
        types = set(types)
        return bool(types) and all(getattr(self._components.get(t), "quick", False) for t in types)


registry = Registry()
register = registry.register
