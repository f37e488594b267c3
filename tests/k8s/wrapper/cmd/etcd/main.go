// etcd, the version k8s.io/kubernetes v1.36.3 pins, as etcd's own main does it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
