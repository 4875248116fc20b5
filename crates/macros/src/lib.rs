//! Attribute macros for mproc: `#[mproc::target]`, `#[mproc::main]`,
//! `#[mproc::test]`. Use them through the `mproc` crate.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, spanned::Spanned, FnArg, ItemFn};

/// Registers a free fn as a process target (see `mproc::target`).
#[proc_macro_attribute]
pub fn target(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[mproc::target] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    if let Err(e) = check_target(&func) {
        return e.to_compile_error().into();
    }
    let ident = &func.sig.ident;
    let name = ident.to_string();
    let arg_types: Vec<&syn::Type> = func
        .sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(t) => Some(&*t.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    // The registration is pushed by an early constructor, which runs
    // before every ordinary one (mproc's bootstrap among them): the child
    // can check the entry it is asked to run (see mproc/src/registry.rs).
    let expanded = quote! {
        #func

        #[doc(hidden)]
        const _: () = {
            static __MPROC_TARGET: ::mproc::__private::Registration =
                ::mproc::__private::Registration::new(::mproc::__private::TargetEntry::new(
                    #name,
                    || ::mproc::__private::type_id_of(&#ident),
                    __mproc_entries,
                ));

            extern "C" fn __mproc_register() {
                __MPROC_TARGET.register();
            }
            ::mproc::__mproc_early_ctor!(__mproc_register);

            fn __mproc_entries() -> ::mproc::__private::Entries {
                let probe = ::mproc::__private::Probe::<_, (#(#arg_types,)*)>::new(&#ident);
                ::mproc::__mproc_entries!(probe)
            }
        };
    };
    expanded.into()
}

fn check_target(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a #[mproc::target] fn cannot be generic: the child must know the concrete types",
        ));
    }
    if sig.asyncness.is_some() {
        return Err(syn::Error::new(
            sig.asyncness.span(),
            "a #[mproc::target] fn cannot be async",
        ));
    }
    if sig.inputs.len() > 6 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "a #[mproc::target] fn takes at most 6 parameters (pass a struct for more)",
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a #[mproc::target] must be a free fn, not a method",
                ));
            }
            FnArg::Typed(t) => {
                if borrowed_part(&t.ty).is_some() {
                    return Err(syn::Error::new_spanned(
                        &t.ty,
                        "a #[mproc::target] parameter cannot borrow: its value is copied into \
                         another process. Use an owned type: `String` for `&str`, `Vec<T>` for \
                         `&[T]`, `T` for `&T`",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The span of a reference or lifetime inside `ty`, if any: a target's
/// parameters cross into another process, so they must be owned.
fn borrowed_part(ty: &syn::Type) -> Option<proc_macro2::Span> {
    use syn::{GenericArgument, PathArguments, ReturnType, Type};
    let in_path = |path: &syn::Path| {
        path.segments.iter().find_map(|seg| match &seg.arguments {
            PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
                GenericArgument::Lifetime(l) => Some(l.span()),
                GenericArgument::Type(t) => borrowed_part(t),
                _ => None,
            }),
            PathArguments::Parenthesized(args) => {
                args.inputs
                    .iter()
                    .find_map(borrowed_part)
                    .or(match &args.output {
                        ReturnType::Type(_, t) => borrowed_part(t),
                        ReturnType::Default => None,
                    })
            }
            PathArguments::None => None,
        })
    };
    match ty {
        Type::Reference(r) => Some(r.span()),
        Type::Path(p) => p
            .qself
            .as_ref()
            .and_then(|q| borrowed_part(&q.ty))
            .or_else(|| in_path(&p.path)),
        Type::Tuple(t) => t.elems.iter().find_map(borrowed_part),
        Type::Array(a) => borrowed_part(&a.elem),
        Type::Slice(s) => borrowed_part(&s.elem),
        Type::Paren(p) => borrowed_part(&p.elem),
        Type::Group(g) => borrowed_part(&g.elem),
        _ => None,
    }
}

/// Makes `main` mproc's entry (see `mproc::main`).
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[mproc::main] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let attrs = &func.attrs;
    let vis = &func.vis;
    let sig = &func.sig;
    let body = &func.block;
    let output = match &sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, t) => quote!(#t),
    };
    // A body that panics or returns `Err` is recorded (the exit procedure
    // then names each child it still waits for: mproc/src/spawn/scope.rs).
    quote! {
        #(#attrs)*
        #vis #sig {
            ::mproc::init();
            let __mproc_scope = ::mproc::__private::MainScope::enter();
            let __mproc_result: #output = (move || -> #output #body)();
            __mproc_scope.finish({
                #[allow(unused_imports)]
                use ::mproc::__private::{ReturnedAnything as _, ReturnedErr as _};
                (&::mproc::__private::Outcome(&__mproc_result)).failed()
            });
            ::mproc::__private::exit_procedure();
            __mproc_result
        }
    }
    .into()
}

/// A `#[test]` whose targets may be spawned (see `mproc::test`).
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[mproc::test] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let attrs = &func.attrs;
    let vis = &func.vis;
    let sig = &func.sig;
    let body = &func.block;
    let output = match &sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, t) => quote!(#t),
    };
    let name = sig.ident.to_string();
    let expects_panic = attrs.iter().any(|a| a.path().is_ident("should_panic"));
    // A test that panics or returns `Err` terminates the children it
    // started and left running (mproc/src/spawn/scope.rs), so that the
    // test binary ends and reports it.
    quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis #sig {
            ::mproc::init();
            let __mproc_scope = ::mproc::__private::TestScope::enter(
                ::core::concat!(::core::module_path!(), "::", #name),
                #expects_panic,
            );
            let __mproc_result: #output = (move || -> #output #body)();
            __mproc_scope.finish({
                #[allow(unused_imports)]
                use ::mproc::__private::{ReturnedAnything as _, ReturnedErr as _};
                (&::mproc::__private::Outcome(&__mproc_result)).failed()
            });
            __mproc_result
        }
    }
    .into()
}
