"""EventBridge-style event buses: rules, targets, put_events (docs/api.md, "Event bus")."""

from walq.bus.bus import Bus, Rule
from walq.bus.targets import InputTransformer, Target

__all__ = ["Bus", "Rule", "Target", "InputTransformer"]
