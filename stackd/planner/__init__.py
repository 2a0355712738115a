"""The planner: desired vs observed state, diffed into a DAG of actions."""
