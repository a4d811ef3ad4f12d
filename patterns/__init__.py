"""Coordination patterns composed from troupe actors, using only the public `actors` API."""
