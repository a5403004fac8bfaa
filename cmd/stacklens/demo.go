package main

// demoComponents are what `stacklens dev --demo` adds: the load generator
// once it exists.
func demoComponents() []component { return nil }
