// kubectl at the server's version, so the tests need no kubectl on the machine. As upstream's
// main, minus the cloud auth plugins: the test cluster authenticates with a client certificate.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
