package testenv_test

import "runtime"

func runtimeGoexit() { runtime.Goexit() }
