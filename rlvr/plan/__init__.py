"""Pure memory planning: model shapes, the plan, its report, shipped model configs."""
