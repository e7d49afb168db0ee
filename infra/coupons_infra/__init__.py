"""Infrastructure: the one definition of every resource, and the CDK constructs built from it."""
