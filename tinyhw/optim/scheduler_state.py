"""What every learning-rate scheduler shares: its last rates and a JSON-able state."""
import copy


class SchedulerState:
    """Mixin: `get_last_lr`, and `state_dict`/`load_state_dict` over every attribute but the
    optimizer (plain Python values, so a checkpoint can store them as JSON)."""

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(copy.deepcopy(dict(state_dict)))
