// Command etcd is the etcd 3.7 server, built from its Go module because no
// prebuilt release can be downloaded on the machines that run clusterset's tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
