"""Many replicas: the fleet of pools, routers, autoscalers and the fleet's control loop."""
