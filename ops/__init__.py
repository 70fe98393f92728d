"""Nexus ops toolkit: environments, runtimes, Ansible-style steps, scenarios, load and audit."""
