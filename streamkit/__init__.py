"""streamkit: Kafka Streams' architecture for asyncio."""

from .agent import Agent
from .app import App
from .errors import (
    AgentError,
    BadInputError,
    ConfigError,
    RecordError,
    SerdeError,
    StreamkitError,
    TopologyError,
    TransportError,
)
from .events import Event
from .serde import Serde
from .settings import Settings
from .stream import Stream
from .topic import ErrorPolicy, Topic
from .topology import TaskId, Topology
from .transport.memory import MemoryBroker

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentError",
    "App",
    "BadInputError",
    "ConfigError",
    "ErrorPolicy",
    "Event",
    "MemoryBroker",
    "RecordError",
    "Serde",
    "SerdeError",
    "Settings",
    "Stream",
    "StreamkitError",
    "TaskId",
    "Topic",
    "Topology",
    "TopologyError",
    "TransportError",
    "__version__",
]
