"""streamkit: Kafka Streams' architecture for asyncio."""

from .agent import Agent
from .app import App
from .dsl.aggregate import Change
from .dsl.global_table import GlobalKTable
from .dsl.kstream import BranchedKStream, KGroupedStream, KStream
from .dsl.ktable import KGroupedTable, KTable
from .dsl.suppress import BufferConfig, Suppressed
from .dsl.windowed import SessionWindowedKStream, TimeWindowedKStream
from .dsl.windows import JoinWindows, SessionWindows, SlidingWindows, TimeWindows, Windowed
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
from .processor import (
    STREAM_TIME,
    WALL_CLOCK,
    Cancellable,
    Processor,
    ProcessorContext,
    PunctuationType,
    Record,
)
from .serde import Serde
from .settings import Settings
from .state.restore_listener import RestoreListener
from .state.timestamped import ValueAndTimestamp
from .stream import Stream
from .topic import ErrorPolicy, Topic
from .topology import TaskId, Topology
from .transport.memory import MemoryBroker

__version__ = "0.1.0"

__all__ = [
    "STREAM_TIME",
    "WALL_CLOCK",
    "Agent",
    "AgentError",
    "App",
    "BadInputError",
    "BranchedKStream",
    "BufferConfig",
    "Cancellable",
    "Change",
    "ConfigError",
    "ErrorPolicy",
    "Event",
    "GlobalKTable",
    "JoinWindows",
    "KGroupedStream",
    "KGroupedTable",
    "KStream",
    "KTable",
    "MemoryBroker",
    "Processor",
    "ProcessorContext",
    "PunctuationType",
    "Record",
    "RecordError",
    "RestoreListener",
    "Serde",
    "SerdeError",
    "SessionWindowedKStream",
    "SessionWindows",
    "Settings",
    "SlidingWindows",
    "Stream",
    "StreamkitError",
    "Suppressed",
    "TaskId",
    "TimeWindowedKStream",
    "TimeWindows",
    "Topic",
    "Topology",
    "TopologyError",
    "TransportError",
    "ValueAndTimestamp",
    "Windowed",
    "__version__",
]
