"""Cost model: model shapes, memory footprint, traffic, roofline throughput, energy."""
