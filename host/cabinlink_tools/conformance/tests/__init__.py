"""The conformance tests (collected by the plugin; see cabinlink_tools.conformance.plugin)."""
