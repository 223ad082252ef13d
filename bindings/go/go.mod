module github.com/wv-project/wv/bindings/go

go 1.24
