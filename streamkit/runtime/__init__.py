"""The worker and what runs inside it: coordinator, tasks, agent runners."""
