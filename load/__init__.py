"""Load tests and the capacity report: Locust users, the test clip mix, a step-load shape and
the report that turns Locust's CSVs into a capacity figure."""
