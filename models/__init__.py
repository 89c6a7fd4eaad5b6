"""Model families of the zoo, one folder each, registered with `zoo.register_model` when imported."""
